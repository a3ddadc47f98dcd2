import { copyFile, mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { PyroError, asPyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { runHostCommand, requireExecutable } from "../process/host-command.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import { BASE_MODULES, NET_MODULES } from "./init-script.js";
import { isFile } from "../storage/path-exists.js";
import { extractVmlinux, moduleLoadOrder, moduleName, resolveKernelPackage, unpackKernelPackage } from "./kernel-package.js";

const KernelManifest = z.object({
  package: z.string(),
  release: z.string(),
  baseModules: z.array(z.string()),
  netModules: z.array(z.string()),
});
export type KernelManifest = z.infer<typeof KernelManifest>;

const CurrentKernel = z.object({ package: z.string() });

/** A prepared guest kernel: the PVH vmlinux plus the driver modules the initramfs loads. */
export interface GuestKernel extends KernelManifest {
  readonly dir: string;
  readonly vmlinuxPath: string;
  readonly modulesDir: string;
  /**
   * The virtio-balloon driver, when prepared: guests load it so that pages they free go back to the
   * host (free page reporting). Kept apart from the boot modules: it is added to kernels prepared
   * before pyro used it without touching their files.
   */
  readonly memoryReturnModule?: string;
}

/** The guest driver behind memory return (virtio-balloon free page reporting). */
export const MEMORY_RETURN_MODULE = "virtio_balloon";
/** After a failed attempt to add it (offline host), processes skip the download for this long. */
const MEMORY_RETURN_RETRY_MS = 24 * 3600_000;

function memoryReturnPaths(dir: string) {
  return { module: join(dir, "extra", `${MEMORY_RETURN_MODULE}.ko`), failed: join(dir, "extra", "unavailable") };
}

/**
 * The kernel with its memory-return driver, fetched from the same kernel package when missing. Best
 * effort: without it (offline, no such module) guests simply keep the pages they touched.
 */
export async function withMemoryReturnModule(kernel: GuestKernel): Promise<GuestKernel> {
  if (kernel.memoryReturnModule) return kernel;
  const files = memoryReturnPaths(kernel.dir);
  const failedAt = (await stat(files.failed).catch(() => undefined))?.mtimeMs;
  if (failedAt !== undefined && Date.now() - failedAt < MEMORY_RETURN_RETRY_MS) return kernel;
  const work = join(kernel.dir, `.extra-${process.pid}`);
  try {
    await unpackKernelPackage(kernel.package, work);
    const modRoot = join(work, "root", "lib", "modules", kernel.release);
    const order = await moduleLoadOrder(modRoot, [MEMORY_RETURN_MODULE]);
    const rel = order.find((r) => moduleName(r) === MEMORY_RETURN_MODULE);
    // Its dependencies must already be in the initramfs (virtio, virtio_ring): it is loaded after them.
    const missing = order.map(moduleName).filter((m) => m !== MEMORY_RETURN_MODULE && !kernel.baseModules.includes(m));
    if (!rel?.endsWith(".ko") || missing.length) throw new Error(`no usable ${MEMORY_RETURN_MODULE}.ko in ${kernel.package}`);
    await mkdir(join(kernel.dir, "extra"), { recursive: true });
    await copyFile(join(modRoot, rel), join(work, "module.ko"));
    await rename(join(work, "module.ko"), files.module);
    return { ...kernel, memoryReturnModule: files.module };
  } catch {
    await mkdir(join(kernel.dir, "extra"), { recursive: true }).catch(() => undefined);
    await writeFile(files.failed, "").catch(() => undefined);
    return kernel;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function kernelsDir(paths: PyroPaths): string {
  return join(paths.cacheDir, "kernels");
}

async function loadKernel(paths: PyroPaths, packageName: string): Promise<GuestKernel | undefined> {
  const dir = join(kernelsDir(paths), packageName);
  const manifest = await readJsonIfValid(join(dir, "manifest.json"), KernelManifest);
  if (!manifest) return undefined;
  const kernel = { ...manifest, dir, vmlinuxPath: join(dir, "vmlinux"), modulesDir: join(dir, "modules") };
  const files = [kernel.vmlinuxPath, ...[...manifest.baseModules, ...manifest.netModules].map((m) => join(kernel.modulesDir, `${m}.ko`))];
  for (const f of files) if (!(await isFile(f))) return undefined;
  const memoryReturnModule = memoryReturnPaths(dir).module;
  return (await isFile(memoryReturnModule)) ? { ...kernel, memoryReturnModule } : kernel;
}

/** The kernel prepared last, if it is intact. Cheap: no apt calls. */
export async function currentGuestKernel(paths: PyroPaths): Promise<GuestKernel | undefined> {
  const current = await readJsonIfValid(join(kernelsDir(paths), "current.json"), CurrentKernel);
  return current ? loadKernel(paths, current.package) : undefined;
}

export interface PrepareKernelOptions {
  /** Ask apt for the newest cloud kernel even when one is prepared already. */
  refresh?: boolean;
  onProgress?: (message: string) => void;
}

/**
 * Returns the prepared guest kernel, downloading and converting Debian's cloud kernel when none is
 * cached (or on refresh, when apt has a newer one). Keyed by package version, so repeated runs are no-ops.
 */
export async function ensureGuestKernel(paths: PyroPaths, options: PrepareKernelOptions = {}): Promise<GuestKernel> {
  const current = await currentGuestKernel(paths);
  if (current && !options.refresh) return current;
  let packageName: string;
  try {
    packageName = await resolveKernelPackage();
  } catch (error) {
    if (current) return current; // offline: keep using what we have
    throw error;
  }
  const existing = await loadKernel(paths, packageName);
  if (existing) {
    await writeJsonAtomic(join(kernelsDir(paths), "current.json"), { package: packageName });
    return existing;
  }
  options.onProgress?.(`[kernel] phase=download package=${packageName}`);
  try {
    const kernel = await buildKernel(paths, packageName, options.onProgress);
    await writeJsonAtomic(join(kernelsDir(paths), "current.json"), { package: packageName });
    return kernel;
  } catch (error) {
    throw asPyroError(error, "KERNEL_UNAVAILABLE", `preparing guest kernel ${packageName}`);
  }
}

async function buildKernel(paths: PyroPaths, packageName: string, onProgress?: (m: string) => void): Promise<GuestKernel> {
  const finalDir = join(kernelsDir(paths), packageName);
  const work = `${finalDir}.partial`;
  await unpackKernelPackage(packageName, work);
  const root = join(work, "root");
  const vmlinuz = (await readdir(join(root, "boot"))).find((f) => f.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new PyroError("KERNEL_UNAVAILABLE", `${packageName} contains no vmlinuz`);
  const release = vmlinuz.slice("vmlinuz-".length);
  onProgress?.(`[kernel] phase=extract release=${release}`);
  const staging = join(work, "out");
  await mkdir(join(staging, "modules"), { recursive: true });
  await extractVmlinux(join(root, "boot", vmlinuz), join(staging, "vmlinux"));
  const modRoot = join(root, "lib", "modules", release);
  const baseOrder = await moduleLoadOrder(modRoot, BASE_MODULES);
  const netOrder = (await moduleLoadOrder(modRoot, NET_MODULES)).filter((m) => !baseOrder.includes(m));
  for (const rel of [...baseOrder, ...netOrder]) {
    const target = join(staging, "modules", `${moduleName(rel)}.ko`);
    if (rel.endsWith(".ko")) await copyFile(join(modRoot, rel), target);
    else if (rel.endsWith(".ko.xz"))
      await runHostCommand(requireExecutable("xz", "xz-utils"), ["-dkf", join(modRoot, rel)]).then(() => copyFile(join(modRoot, rel.slice(0, -3)), target));
    else throw new PyroError("KERNEL_UNAVAILABLE", `unsupported module compression: ${rel}`);
  }
  const manifest: KernelManifest = {
    package: packageName,
    release,
    baseModules: baseOrder.map(moduleName),
    netModules: netOrder.map(moduleName),
  };
  await writeJsonAtomic(join(staging, "manifest.json"), manifest);
  await rm(finalDir, { recursive: true, force: true });
  await rename(staging, finalDir);
  await rm(work, { recursive: true, force: true });
  const kernel = await loadKernel(paths, packageName);
  if (!kernel) throw new PyroError("KERNEL_UNAVAILABLE", `prepared kernel ${packageName} failed validation`);
  onProgress?.(`[kernel] phase=ready release=${release}`);
  return kernel;
}
