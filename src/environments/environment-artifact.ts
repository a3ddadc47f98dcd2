import { chmod, lstat, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import { create as createTar } from "tar";
import { z } from "zod";
import { PyroError } from "../errors.js";
import { currentGuestKernel } from "../guest-kernel/guest-kernel.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import { digestFileName } from "../registry/digest.js";
import { formatReference, parseReference, type ImageReference } from "../registry/image-reference.js";
import { credentialsFromEnv, fileDigest, RegistryClient, type Descriptor, type ProgressFn } from "../registry/registry-client.js";
import { environmentSlug, requireEnvironmentName } from "./catalog.js";
import type { EnvironmentStore, InstalledEnvironment } from "./environment-store.js";
import { layerTar } from "./image-layer.js";
import { pathExists } from "../storage/path-exists.js";
import { RootedTree } from "../storage/rooted-path.js";
import { readQcow2Header } from "../storage/qcow2-backing-chain.js";
import { MAX_UNPACKED_BYTES } from "../storage/unpack-budget.js";
import { extractTarInRoot } from "../storage/rooted-tar-extract.js";

export const ARTIFACT_TYPE = "application/vnd.pyro.environment.v1";
export const CONFIG_TYPE = "application/vnd.pyro.environment.config.v1+json";
export const ROOTFS_TYPE = "application/vnd.pyro.rootfs.ext4.qcow2";
export const KERNEL_TYPE = "application/vnd.pyro.kernel.v1.tar+gzip";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

const ArtifactConfig = z.object({
  name: z.string(),
  version: z.string(),
  description: z.string().optional(),
  packages: z.array(z.string()),
  suite: z.string(),
  image_size_bytes: z.number(),
  // Names a directory under the kernel cache: a Debian package name, never a path.
  kernel_package: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.+~-]{0,127}$/)
    .nullable(),
});
type ArtifactConfig = z.infer<typeof ArtifactConfig>;

interface OciManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** Where the catalog's environments are published; PYRO_ENV_REGISTRY overrides ("none" disables). */
export const DEFAULT_ENV_REGISTRY = "ghcr.io/pyro-mcp/environments";

export function registryRefFor(name: string, env: NodeJS.ProcessEnv = process.env): ImageReference | undefined {
  const base = env.PYRO_ENV_REGISTRY ?? DEFAULT_ENV_REGISTRY;
  if (!base || base === "none") return undefined;
  const [repo, tag = "latest"] = name.split(":");
  return parseReference(`${base}/${repo}:${tag}`);
}

function client(ref: ImageReference): RegistryClient {
  return new RegistryClient(ref, credentialsFromEnv());
}

export interface PushResult {
  environment: string;
  reference: string;
  digest: string;
  layers: { mediaType: string; digest: string; size: number }[];
}

/** Publishes an installed environment (rootfs, kernel, manifest) as an OCI artifact. */
export async function pushEnvironment(
  paths: PyroPaths,
  installed: InstalledEnvironment,
  reference: string,
  progress: (label: string) => ProgressFn,
): Promise<PushResult> {
  const ref = parseReference(reference);
  const staging = join(paths.cacheDir, "push", `${environmentSlug(installed.spec.name)}-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  try {
    const rootfs = join(staging, "rootfs.qcow2");
    // Compressed qcow2 skips the image's empty space: ~80 MB for a 4 GiB sparse debian:12.
    await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["convert", "-c", "-O", "qcow2", installed.imagePath, rootfs], { timeoutMs: 1_800_000 });
    const kernel = await currentGuestKernel(paths);
    const layers: { path: string; mediaType: string; title: string }[] = [{ path: rootfs, mediaType: ROOTFS_TYPE, title: "rootfs.qcow2" }];
    if (kernel) {
      const kernelTar = join(staging, "kernel.tar.gz");
      await createTar({ gzip: true, file: kernelTar, cwd: kernel.dir, portable: true }, ["."]);
      layers.push({ path: kernelTar, mediaType: KERNEL_TYPE, title: `${kernel.package}.tar.gz` });
    }
    const config: ArtifactConfig = {
      name: installed.spec.name,
      version: installed.manifest.version,
      description: installed.spec.description,
      packages: installed.manifest.packages,
      suite: installed.manifest.suite,
      image_size_bytes: installed.manifest.imageSizeBytes,
      kernel_package: kernel?.package ?? null,
    };
    const configPath = join(staging, "config.json");
    await writeFile(configPath, JSON.stringify(config));
    const registry = client(ref);
    const descriptors: Descriptor[] = [];
    for (const layer of layers) {
      const { digest, size } = await fileDigest(layer.path);
      await registry.pushBlob(layer.path, digest, progress(layer.title));
      descriptors.push({ mediaType: layer.mediaType, digest, size, annotations: { "org.opencontainers.image.title": layer.title } });
    }
    const configDigest = await fileDigest(configPath);
    await registry.pushBlob(configPath, configDigest.digest);
    const manifest: OciManifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: ARTIFACT_TYPE,
      config: { mediaType: CONFIG_TYPE, ...configDigest },
      layers: descriptors,
      annotations: { "org.opencontainers.image.title": installed.spec.name },
    };
    const digest = await registry.putManifest(ref.tag ?? ref.digest ?? "latest", OCI_MANIFEST, Buffer.from(JSON.stringify(manifest)));
    return {
      environment: installed.spec.name,
      reference: formatReference(ref),
      digest,
      layers: descriptors.map(({ mediaType, digest: d, size }) => ({ mediaType, digest: d, size })),
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

const ROOTFS_FILE = "rootfs.ext4";
const CONVERT_TIMEOUT_MS = 600_000;
const CONVERT_LIMITS = { cpuSeconds: 600, addressSpaceBytes: 4 * 2 ** 30 };

/**
 * Turns a registry's rootfs layer into `<installDir>/rootfs.ext4`. The blob is hostile: a qcow2 may
 * name a backing file or an external data file (a host path, a URL, a json: spec) that qemu-img
 * would read into the image guests later see. So only a standalone qcow2 is accepted, its format is
 * stated (-f qcow2, no probing), and qemu-img runs sandboxed with the blob as its only input.
 */
export async function unpackRootfsLayer(blob: string, installDir: string, imageSizeBytes: number, origin: string): Promise<string> {
  const header = await readQcow2Header(blob);
  if (!header) throw new PyroError("REGISTRY_ERROR", `the rootfs layer of ${origin} is not a qcow2 image; it was refused`);
  if (header.backing !== undefined)
    throw new PyroError(
      "REGISTRY_ERROR",
      `the rootfs layer of ${origin} is a qcow2 overlay naming a backing file ('${header.backing.slice(0, 200)}'); pyro accepts only standalone images, so it was refused`,
    );
  if (header.externalDataFile)
    throw new PyroError(
      "REGISTRY_ERROR",
      `the rootfs layer of ${origin} keeps its data in an external file; pyro accepts only standalone images, so it was refused`,
    );
  if (!Number.isSafeInteger(imageSizeBytes) || imageSizeBytes <= 0 || imageSizeBytes > MAX_UNPACKED_BYTES) {
    throw new PyroError("REGISTRY_ERROR", `${origin} declares an impossible image size ${imageSizeBytes} (at most ${MAX_UNPACKED_BYTES} bytes)`);
  }
  if (header.virtualSize !== imageSizeBytes)
    throw new PyroError("REGISTRY_ERROR", `the rootfs layer of ${origin} is ${header.virtualSize} bytes, the artifact says ${imageSizeBytes}`);
  const converted = await runSandboxed({
    tool: requireExecutable("qemu-img", "qemu-utils"),
    args: ["convert", "-f", "qcow2", "-O", "raw", blob, `${SANDBOX_OUTPUT_DIR}/${ROOTFS_FILE}`],
    readOnlyFiles: [blob],
    outputDir: installDir,
    timeoutMs: CONVERT_TIMEOUT_MS,
    limits: { ...CONVERT_LIMITS, fileSizeBytes: imageSizeBytes },
  });
  if (converted.exitCode !== 0 || converted.signal) throw sandboxFailure(converted, `unpacking the rootfs layer of ${origin}`);
  const image = join(installDir, ROOTFS_FILE);
  const st = await lstat(image).catch(() => undefined);
  if (!st?.isFile()) throw new PyroError("REGISTRY_ERROR", `unpacking the rootfs layer of ${origin} left no plain ${ROOTFS_FILE}`);
  if (st.size !== imageSizeBytes) throw new PyroError("REGISTRY_ERROR", `unpacked rootfs is ${st.size} bytes, the artifact says ${imageSizeBytes}`);
  await chmod(image, 0o444);
  return image;
}

/**
 * Pulls an environment artifact and installs it. Blobs are downloaded into a per-environment
 * staging directory that survives interruption (the next pull resumes), verified by digest, and the
 * environment is swapped in only when complete. Concurrent pulls of one environment wait for each
 * other and then reuse the result.
 */
export async function pullEnvironmentArtifact(
  paths: PyroPaths,
  store: EnvironmentStore,
  reference: string,
  options: { as?: string; force?: boolean; progress: (label: string) => ProgressFn; log: (m: string) => void },
): Promise<InstalledEnvironment> {
  const ref = parseReference(reference);
  const registry = client(ref);
  const { body, digest } = await registry.getManifest(ref.digest ?? ref.tag ?? "latest");
  const manifest = JSON.parse(body.toString("utf8")) as OciManifest;
  if (manifest.artifactType !== ARTIFACT_TYPE && manifest.config?.mediaType !== CONFIG_TYPE) {
    throw new PyroError("INVALID_ARGUMENT", `${formatReference(ref)} is not a pyro environment; import container images with 'pyro env import'`);
  }
  // One staging directory per artifact, kept across interruptions so the next pull resumes; its
  // lock makes concurrent pulls of the same artifact wait for the first and reuse its result.
  const staging = join(store.rootDir, `.pull-${digest.slice(7, 23)}`);
  await mkdir(staging, { recursive: true });
  const release = await lockfile.lock(staging, {
    realpath: false,
    stale: 60_000,
    update: 10_000,
    retries: { retries: 3600, minTimeout: 200, maxTimeout: 1000 },
  });
  try {
    await mkdir(staging, { recursive: true }); // a pull we waited for may have finished and removed it
    const configPath = join(staging, "config.json");
    if (!(await pathExists(configPath))) await registry.pullBlob(manifest.config, configPath);
    const parsed = ArtifactConfig.safeParse(JSON.parse(await readFile(configPath, "utf8")));
    if (!parsed.success) throw new PyroError("REGISTRY_ERROR", `${formatReference(ref)} has an invalid pyro config`);
    const config = parsed.data;
    // The name becomes a directory under the cache: the registry's (or --as) obeys the import rule.
    const name =
      options.as !== undefined ? requireEnvironmentName(options.as, "--as") : requireEnvironmentName(config.name, `the config of ${formatReference(ref)}`);
    const current = await store.require(name).catch(() => undefined);
    if (current && current.manifest.source?.digest === digest && !options.force) {
      await rm(staging, { recursive: true, force: true });
      options.log(`[pull] phase=ready environment=${name} cached=yes digest=${digest}`);
      return current;
    }
    for (const layer of manifest.layers) {
      const file = join(staging, digestFileName(layer.digest, `${formatReference(ref)}: a layer`));
      if (!(await pathExists(file))) {
        options.log(
          `[pull] phase=download environment=${name} layer=${layer.annotations?.["org.opencontainers.image.title"] ?? layer.mediaType} bytes=${layer.size}`,
        );
        await registry.pullBlob(layer, file, options.progress(layer.annotations?.["org.opencontainers.image.title"] ?? layer.digest.slice(7, 19)));
      }
    }
    const rootfsLayer = manifest.layers.find((l) => l.mediaType === ROOTFS_TYPE);
    if (!rootfsLayer) throw new PyroError("REGISTRY_ERROR", `${formatReference(ref)} has no rootfs layer`);
    const install = join(staging, "install");
    await rm(install, { recursive: true, force: true });
    await mkdir(install);
    options.log(`[pull] phase=unpack environment=${name}`);
    await unpackRootfsLayer(join(staging, digestFileName(rootfsLayer.digest, "the rootfs layer")), install, config.image_size_bytes, formatReference(ref));
    const kernelLayer = manifest.layers.find((l) => l.mediaType === KERNEL_TYPE);
    if (kernelLayer && config.kernel_package && !(await pathExists(join(paths.cacheDir, "kernels", config.kernel_package, "manifest.json")))) {
      const dir = join(paths.cacheDir, "kernels", `${config.kernel_package}.partial`);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      // The registry is untrusted: its kernel tar is unpacked like an image layer, every path resolved inside `dir`.
      const kernelTar = layerTar({ path: join(staging, digestFileName(kernelLayer.digest, "the kernel layer")), compression: "gzip" });
      await extractTarInRoot(new RootedTree(dir), kernelTar, { label: `the kernel layer of ${formatReference(ref)}` });
      await rename(dir, join(paths.cacheDir, "kernels", config.kernel_package));
    }
    const installed = await store.install(name, install, {
      name,
      version: config.version,
      packages: config.packages,
      suite: config.suite,
      imageFile: ROOTFS_FILE,
      imageSizeBytes: config.image_size_bytes,
      builtAt: new Date().toISOString(),
      buildSeconds: 0,
      source: { kind: "registry", ref: formatReference(ref), digest },
      ...(config.description ? { description: config.description } : {}),
    });
    // Done: remove the staging directory while still holding the lock (the lock lives beside it).
    // A failed pull never gets here, so its partial blobs stay for the next attempt to resume.
    await rm(staging, { recursive: true, force: true });
    options.log(`[pull] phase=ready environment=${name} digest=${digest}`);
    return installed;
  } finally {
    await release().catch(() => undefined);
  }
}
