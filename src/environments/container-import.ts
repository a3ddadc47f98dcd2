import { createReadStream } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { Parser, extract as extractTar, type ReadEntry } from "tar";
import { PyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand, runHostCommandRaw } from "../process/host-command.js";
import { formatReference, parseReference } from "../registry/image-reference.js";
import { credentialsFromEnv, RegistryClient, type Descriptor, type ProgressFn } from "../registry/registry-client.js";
import { safeRelativePath } from "../workspaces/archive-safety.js";
import { environmentSlug } from "./catalog.js";
import type { EnvironmentStore, InstalledEnvironment } from "./environment-store.js";
import { IMAGE_SIZE_BYTES } from "./rootfs-build.js";
import { pathExists } from "../storage/path-exists.js";

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

interface LayerFile {
  path: string;
  /** gzip, zstd or none (plain tar). */
  compression: "gzip" | "zstd" | "none";
}

function compressionOf(mediaType: string, firstBytes?: Buffer): LayerFile["compression"] {
  if (mediaType.includes("zstd") || (firstBytes && firstBytes.readUInt32LE(0) === 0xfd2fb528)) return "zstd";
  if (mediaType.includes("gzip") || mediaType.endsWith(".tar.gzip") || (firstBytes && firstBytes[0] === 0x1f && firstBytes[1] === 0x8b)) return "gzip";
  return "none";
}

function decompressor(kind: LayerFile["compression"]): NodeJS.ReadWriteStream | undefined {
  if (kind === "gzip") return zlib.createGunzip();
  if (kind === "zstd") {
    const make = (zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream }).createZstdDecompress;
    if (!make) throw new PyroError("INVALID_ARGUMENT", "this image has zstd layers; Node.js 23.8+ is needed to read them");
    return make();
  }
  return undefined;
}

/** Streams a layer's entries (decompressed) through a tar parser. */
async function readLayer(layer: LayerFile, onEntry: (entry: ReadEntry) => void): Promise<void> {
  const parser = new Parser({ onReadEntry: (e) => {
    onEntry(e);
    e.resume();
  } });
  const stages: (NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream)[] = [createReadStream(layer.path)];
  const d = decompressor(layer.compression);
  if (d) stages.push(d);
  stages.push(parser as unknown as NodeJS.WritableStream);
  await (pipeline as (...s: unknown[]) => Promise<void>)(...stages);
}

/**
 * Applies one layer on top of `root`: first its whiteouts (files deleted, directories made opaque,
 * against the layers below), then its content. Paths are normalised and refused if they escape;
 * node-tar also refuses to write through symlinks, so a layer cannot reach outside `root`.
 */
async function applyLayer(root: string, layer: LayerFile): Promise<void> {
  const deletions: string[] = [];
  const opaque: string[] = [];
  await readLayer(layer, (entry) => {
    const path = safeRelativePath(entry.path);
    const base = posix.basename(path);
    if (base === OPAQUE) opaque.push(posix.dirname(path));
    else if (base.startsWith(WHITEOUT)) deletions.push(posix.join(posix.dirname(path), base.slice(WHITEOUT.length)));
  });
  for (const dir of opaque) {
    const full = join(root, dir);
    for (const child of await readdir(full).catch(() => [] as string[])) await rm(join(full, child), { recursive: true, force: true });
  }
  for (const path of deletions) await rm(join(root, safeRelativePath(path)), { recursive: true, force: true });
  const stages: (NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream)[] = [createReadStream(layer.path)];
  const d = decompressor(layer.compression);
  if (d) stages.push(d);
  const isRoot = process.getuid?.() === 0;
  stages.push(
    extractTar({
      cwd: root,
      preserveOwner: isRoot,
      unlink: true,
      // Whiteout markers are instructions, not files; device nodes cannot be made without privileges we refuse to use.
      filter: (path, entry) => !posix.basename(path).startsWith(WHITEOUT) && !["CharacterDevice", "BlockDevice", "FIFO"].includes((entry as ReadEntry).type),
    }) as unknown as NodeJS.WritableStream,
  );
  await (pipeline as (...s: unknown[]) => Promise<void>)(...stages);
}

interface ImageLayers {
  layers: LayerFile[];
  origin: string;
}

/** Layers of a `docker save` archive or an OCI image layout, unpacked into `dir`. */
async function layersFromArchive(archive: string, dir: string): Promise<ImageLayers> {
  await mkdir(dir, { recursive: true });
  await extractTar({ file: archive, cwd: dir, strict: true });
  const manifestPath = join(dir, "manifest.json");
  const indexPath = join(dir, "index.json");
  if (await pathExists(manifestPath)) {
    const manifest = JSON.parse(await readFile(manifestPath, "utf8")) as { Layers: string[] }[];
    const first = manifest[0];
    if (!first?.Layers?.length) throw new PyroError("INVALID_ARGUMENT", `${archive} has no layers in manifest.json`);
    const layers: LayerFile[] = [];
    for (const rel of first.Layers) {
      const path = join(dir, safeRelativePath(rel));
      const head = Buffer.alloc(4);
      const fh = await open(path, "r");
      await fh.read(head, 0, 4, 0);
      await fh.close();
      layers.push({ path, compression: compressionOf("", head) });
    }
    return { layers, origin: archive };
  }
  if (await pathExists(indexPath)) {
    const index = JSON.parse(await readFile(indexPath, "utf8")) as { manifests: Descriptor[] };
    const blob = (d: Descriptor) => join(dir, "blobs", ...d.digest.split(":"));
    let manifest = JSON.parse(await readFile(blob(pickManifest(index.manifests)), "utf8")) as { layers?: Descriptor[]; manifests?: Descriptor[] };
    if (manifest.manifests) manifest = JSON.parse(await readFile(blob(pickManifest(manifest.manifests)), "utf8")) as { layers?: Descriptor[] };
    return { layers: (manifest.layers ?? []).map((l) => ({ path: blob(l), compression: compressionOf(l.mediaType) })), origin: archive };
  }
  throw new PyroError("INVALID_ARGUMENT", `${archive} is neither a 'docker save' archive (manifest.json) nor an OCI layout (index.json)`);
}

function pickManifest(manifests: Descriptor[]): Descriptor {
  const amd64 = manifests.find((m) => !m.platform || (m.platform.architecture === "amd64" && m.platform.os === "linux"));
  if (!amd64) throw new PyroError("INVALID_ARGUMENT", "the image has no linux/amd64 variant");
  return amd64;
}

/** Layers of an image in a registry (OCI or Docker v2; a multi-platform index picks linux/amd64). */
async function layersFromRegistry(reference: string, dir: string, progress: (label: string) => ProgressFn): Promise<ImageLayers> {
  const ref = parseReference(reference);
  const registry = new RegistryClient(ref, credentialsFromEnv());
  let { body } = await registry.getManifest(ref.digest ?? ref.tag ?? "latest");
  let manifest = JSON.parse(body.toString("utf8")) as { manifests?: Descriptor[]; layers?: Descriptor[] };
  if (manifest.manifests) {
    ({ body } = await registry.getManifest(pickManifest(manifest.manifests).digest));
    manifest = JSON.parse(body.toString("utf8")) as { layers?: Descriptor[] };
  }
  await mkdir(dir, { recursive: true });
  const layers: LayerFile[] = [];
  for (const layer of manifest.layers ?? []) {
    const path = join(dir, layer.digest.replace(":", "-"));
    if (!(await pathExists(path))) await registry.pullBlob(layer, path, progress(layer.digest.slice(7, 19)));
    layers.push({ path, compression: compressionOf(layer.mediaType) });
  }
  if (!layers.length) throw new PyroError("INVALID_ARGUMENT", `${formatReference(ref)} has no layers`);
  return { layers, origin: formatReference(ref) };
}


/** What every pyro guest needs that a container image may lack. */
async function addGuestEssentials(root: string): Promise<void> {
  for (const dir of ["proc", "sys", "dev", "run", "tmp", "workspace", "etc", "root", "var/tmp"]) await mkdir(join(root, dir), { recursive: true });
  await writeFile(join(root, "etc", "hostname"), "pyro\n");
  if (!(await lstat(join(root, "etc", "hosts")).then(() => true, () => false))) await writeFile(join(root, "etc", "hosts"), "127.0.0.1 localhost pyro\n");
}

/**
 * Turns a container image into a bootable environment: layers applied into a directory, the guest
 * essentials added, packed with `mkfs.ext4 -d` (nothing mounted). The pyro agent and kernel come
 * from the initramfs at boot, as for every environment.
 */
export async function importContainerImage(
  paths: PyroPaths,
  store: EnvironmentStore,
  source: string,
  name: string,
  options: { log: (m: string) => void; progress: (label: string) => ProgressFn },
): Promise<InstalledEnvironment> {
  if (!/^[a-z0-9][a-z0-9._:-]{0,62}$/.test(name)) throw new PyroError("INVALID_ARGUMENT", `invalid environment name '${name}': use lowercase letters, digits, '.', '_', ':' and '-'`);
  if (!(await store.customSpec(name)) && (await store.spec(name).then(() => true, () => false))) {
    throw new PyroError("INVALID_ARGUMENT", `'${name}' is a catalog environment; choose another name for the import`);
  }
  const work = join(store.rootDir, `.import-${environmentSlug(name)}-${process.pid}`);
  await rm(work, { recursive: true, force: true });
  try {
    const isFile = await stat(source).then((s) => s.isFile(), () => false);
    options.log(`[import] phase=fetch source=${source}`);
    const image = isFile ? await layersFromArchive(source, join(work, "archive")) : await layersFromRegistry(source, join(work, "blobs"), options.progress);
    const root = join(work, "rootfs");
    await mkdir(root, { recursive: true });
    for (const [i, layer] of image.layers.entries()) {
      options.log(`[import] phase=layer ${i + 1}/${image.layers.length}`);
      await applyLayer(root, layer);
    }
    await addGuestEssentials(root);
    options.log(`[import] phase=image environment=${name}`);
    const install = join(work, "install");
    await mkdir(install);
    const du = await runHostCommandRaw("du", ["-sb", root]);
    const treeBytes = Number(du.stdout.toString().split(/\s/)[0] ?? 0);
    const size = Math.max(IMAGE_SIZE_BYTES, Math.ceil((treeBytes * 1.5 + 1024 ** 3) / 1024 ** 2) * 1024 ** 2);
    const imagePath = join(install, "rootfs.ext4");
    await runHostCommand(requireExecutable("mkfs.ext4", "e2fsprogs"), ["-q", "-F", "-L", "pyro-root", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", root, imagePath, `${size / 1024}k`], { timeoutMs: 1_800_000 });
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
