import { createReadStream } from "node:fs";
import { chmod, mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { PyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand, runHostCommandRaw } from "../process/host-command.js";
import { digestFileName, requireDigest } from "../registry/digest.js";
import { formatReference, parseReference } from "../registry/image-reference.js";
import { credentialsFromEnv, RegistryClient, type Descriptor, type ProgressFn } from "../registry/registry-client.js";
import { pathExists } from "../storage/path-exists.js";
import { RootedTree } from "../storage/rooted-path.js";
import { extractTarInRoot } from "../storage/rooted-tar-extract.js";
import { UnpackBudget } from "../storage/unpack-budget.js";
import { environmentSlug, requireEnvironmentName } from "./catalog.js";
import type { EnvironmentStore, InstalledEnvironment } from "./environment-store.js";
import { applyLayer, compressionOf, type LayerFile } from "./image-layer.js";
import { IMAGE_SIZE_BYTES } from "./rootfs-build.js";

interface ImageLayers {
  layers: LayerFile[];
  origin: string;
}

// Only the fields pyro reads; anything else in these hostile files is ignored.
const DockerSaveManifest = z.array(z.object({ Layers: z.array(z.string()) }).loose());
const DescriptorShape = z
  .object({
    mediaType: z.string().default(""),
    digest: z.string(),
    size: z.number(),
    platform: z.object({ architecture: z.string(), os: z.string(), variant: z.string().optional() }).loose().optional(),
  })
  .loose();
const OciIndexOrManifest = z.object({ manifests: z.array(DescriptorShape).optional(), layers: z.array(DescriptorShape).optional() }).loose();

function parseJson<T>(text: string, schema: z.ZodType<T>, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PyroError("INVALID_ARGUMENT", `${what} is not valid JSON: ${(error as Error).message}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new PyroError("INVALID_ARGUMENT", `${what} is not a valid image manifest: ${parsed.error.issues[0]?.message ?? "bad shape"}`);
  return parsed.data;
}

async function firstBytes(path: string): Promise<Buffer> {
  const head = Buffer.alloc(4);
  const fh = await open(path, "r");
  try {
    const { bytesRead } = await fh.read(head, 0, 4, 0);
    return head.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Layers of a `docker save` archive or an OCI image layout, unpacked into `dir`. The archive is as
 * hostile as its layers: it is unpacked with the same rooted extraction, and every file named by
 * its manifests is resolved inside `dir` (OCI blobs only by a well-formed digest).
 */
async function layersFromArchive(archive: string, dir: string): Promise<ImageLayers> {
  await mkdir(dir, { recursive: true });
  const unpacked = new RootedTree(dir);
  await extractTarInRoot(unpacked, createReadStream(archive), { label: archive });
  if (await unpacked.lstat("manifest.json")) {
    const manifest = parseJson(await readFile(await unpacked.regularFile("manifest.json"), "utf8"), DockerSaveManifest, `${archive}: manifest.json`);
    const first = manifest[0];
    if (!first?.Layers.length) throw new PyroError("INVALID_ARGUMENT", `${archive} has no layers in manifest.json`);
    const layers: LayerFile[] = [];
    for (const rel of first.Layers) {
      const path = await unpacked.regularFile(rel);
      layers.push({ path, compression: compressionOf("", await firstBytes(path)) });
    }
    return { layers, origin: archive };
  }
  if (await unpacked.lstat("index.json")) {
    const blob = (d: { digest: string }, what: string) => unpacked.regularFile(`blobs/${requireDigest(d.digest, `${archive}: ${what}`).replace(":", "/")}`);
    const read = async (path: string, what: string) => parseJson(await readFile(path, "utf8"), OciIndexOrManifest, `${archive}: ${what}`);
    const index = await read(await unpacked.regularFile("index.json"), "index.json");
    let manifest = await read(await blob(pickManifest(index.manifests ?? []), "the index's manifest"), "manifest");
    if (manifest.manifests) manifest = await read(await blob(pickManifest(manifest.manifests), "the image index's manifest"), "manifest");
    const layers: LayerFile[] = [];
    for (const layer of manifest.layers ?? []) layers.push({ path: await blob(layer, "a layer"), compression: compressionOf(layer.mediaType) });
    return { layers, origin: archive };
  }
  throw new PyroError("INVALID_ARGUMENT", `${archive} is neither a 'docker save' archive (manifest.json) nor an OCI layout (index.json)`);
}

function pickManifest<T extends Pick<Descriptor, "platform">>(manifests: T[]): T {
  const amd64 = manifests.find((m) => !m.platform || (m.platform.architecture === "amd64" && m.platform.os === "linux"));
  if (!amd64) throw new PyroError("INVALID_ARGUMENT", "the image has no linux/amd64 variant");
  return amd64;
}

/** Layers of an image in a registry (OCI or Docker v2; a multi-platform index picks linux/amd64). */
async function layersFromRegistry(reference: string, dir: string, progress: (label: string) => ProgressFn): Promise<ImageLayers> {
  const ref = parseReference(reference);
  const registry = new RegistryClient(ref, credentialsFromEnv());
  const origin = formatReference(ref);
  let { body } = await registry.getManifest(ref.digest ?? ref.tag ?? "latest");
  let manifest = parseJson(body.toString("utf8"), OciIndexOrManifest, `${origin}: manifest`);
  if (manifest.manifests) {
    ({ body } = await registry.getManifest(requireDigest(pickManifest(manifest.manifests).digest, `${origin}: the index's manifest`)));
    manifest = parseJson(body.toString("utf8"), OciIndexOrManifest, `${origin}: manifest`);
  }
  await mkdir(dir, { recursive: true });
  const layers: LayerFile[] = [];
  for (const layer of manifest.layers ?? []) {
    const path = join(dir, digestFileName(layer.digest, `${origin}: a layer`));
    if (!(await pathExists(path))) await registry.pullBlob(layer, path, progress(layer.digest.slice(7, 19)));
    layers.push({ path, compression: compressionOf(layer.mediaType) });
  }
  if (!layers.length) throw new PyroError("INVALID_ARGUMENT", `${origin} has no layers`);
  return { layers, origin };
}

/** What every pyro guest needs that a container image may lack. */
async function addGuestEssentials(rootfs: RootedTree): Promise<void> {
  // Resolved inside the rootfs like everything else: an image's `etc -> /somewhere` means its own /somewhere.
  for (const dir of ["proc", "sys", "dev", "run", "tmp", "workspace", "etc", "root", "var/tmp"]) {
    const at = await rootfs.resolve(dir, { followFinal: true, createParents: true });
    if (!at.stats?.isDirectory()) await rootfs.makeDirectory(at.relative);
  }
  await rootfs.writeFile("etc/hostname", "pyro\n");
  if (!(await rootfs.lstat("etc/hosts"))) await rootfs.writeFile("etc/hosts", "127.0.0.1 localhost pyro\n");
}

/**
 * Turns a container image into a bootable environment: layers applied into a directory, the guest
 * essentials added, packed with `mkfs.ext4 -d` (nothing mounted). The pyro agent and kernel come
 * from the initramfs at boot, as for every environment.
 */
export async function importContainerImage(
  _paths: PyroPaths,
  store: EnvironmentStore,
  source: string,
  name: string,
  options: { log: (m: string) => void; progress: (label: string) => ProgressFn },
): Promise<InstalledEnvironment> {
  requireEnvironmentName(name);
  if (
    !(await store.customSpec(name)) &&
    (await store.spec(name).then(
      () => true,
      () => false,
    ))
  ) {
    throw new PyroError("INVALID_ARGUMENT", `'${name}' is a catalog environment; choose another name for the import`);
  }
  const work = join(store.rootDir, `.import-${environmentSlug(name)}-${process.pid}`);
  await rm(work, { recursive: true, force: true });
  try {
    const isFile = await stat(source).then(
      (s) => s.isFile(),
      () => false,
    );
    options.log(`[import] phase=fetch source=${source}`);
    const image = isFile ? await layersFromArchive(source, join(work, "archive")) : await layersFromRegistry(source, join(work, "blobs"), options.progress);
    const root = join(work, "rootfs");
    await mkdir(root, { recursive: true });
    const rootfs = new RootedTree(root);
    // One budget for the whole image: many modest layers cannot add up to an endless one.
    const budget = new UnpackBudget();
    for (const [i, layer] of image.layers.entries()) {
      options.log(`[import] phase=layer ${i + 1}/${image.layers.length}`);
      await applyLayer(rootfs, layer, `layer ${i + 1} of ${image.origin}`, budget);
    }
    await addGuestEssentials(rootfs);
    options.log(`[import] phase=image environment=${name}`);
    const install = join(work, "install");
    await mkdir(install);
    const du = await runHostCommandRaw("du", ["-sb", root]);
    const treeBytes = Number(du.stdout.toString().split(/\s/)[0] ?? 0);
    const size = Math.max(IMAGE_SIZE_BYTES, Math.ceil((treeBytes * 1.5 + 1024 ** 3) / 1024 ** 2) * 1024 ** 2);
    const imagePath = join(install, "rootfs.ext4");
    await runHostCommand(
      requireExecutable("mkfs.ext4", "e2fsprogs"),
      ["-q", "-F", "-L", "pyro-root", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", root, imagePath, `${size / 1024}k`],
      { timeoutMs: 1_800_000 },
    );
    await chmod(imagePath, 0o444);
    const installed = await store.install(name, install, {
      name,
      version: "imported",
      packages: [],
      suite: "container-image",
      imageFile: "rootfs.ext4",
      imageSizeBytes: size,
      builtAt: new Date().toISOString(),
      buildSeconds: 0,
      source: { kind: "import", ref: image.origin },
      description: `imported from ${image.origin}`,
    });
    options.log(`[import] phase=ready environment=${name}`);
    return installed;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
