import { createHash, randomBytes } from "node:crypto";
import { chmod, lstat, readdir, readFile, realpath, rename, rm, stat, statfs, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { environmentSlug } from "../environments/catalog.js";
import type { InstalledEnvironment } from "../environments/environment-store.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import type { GuestRuntime } from "../runtime/guest-runtime.js";
import type { VmLaunchSpec } from "../runtime/vmm-backend.js";
import { bootTimeoutMs } from "../vm-run/disposable-vm.js";
import { pathExists } from "../storage/path-exists.js";
import { ensurePrivateDir, makePrivateSubdir, PRIVATE_FILE_MODE } from "../storage/private-storage.js";
import { DEFAULT_DISK_GIB, diskBytes } from "./seed-image.js";

/**
 * A booted-once guest saved to disk: restoring it gives a ready agent in a fraction of a ~1.5 s cold
 * boot under TCG (runtime-facts §5). One per environment and machine shape.
 *
 * Where a memory filesystem is available, the template's RAM is a file there and its state file
 * holds device state only: every VM restored from it maps that file copy-on-write, so idle copies
 * share the template's pages instead of each holding a private copy of all guest RAM. Elsewhere the
 * RAM is streamed into the state file, and every restore loads all of it.
 */
export interface BootTemplate {
  key: string;
  statePath: string;
  /** Frozen qcow2 the template guest ran on; workspace disks are layered on it. */
  diskPath: string;
  /** The template's RAM, for copy-on-write restores; absent when the RAM is in the state file. */
  memoryPath?: string;
  /**
   * The empty (sparse, all zeros) stand-in for the /workspace disk the template guest booted with:
   * a restored VM must have the same devices, so it gets its own disk of this size in that place.
   */
  workspaceDiskPath: string;
}

export interface MachineShape {
  vcpuCount: number;
  memMib: number;
  /** Size of the /workspace disk (default DEFAULT_DISK_GIB): part of the machine a state restores into. */
  diskGib?: number;
}

const PLACEHOLDER_DISK = "workspace-placeholder.raw";

function shapeDiskGib(shape: MachineShape): number {
  return shape.diskGib ?? DEFAULT_DISK_GIB;
}

const TemplateManifest = z.object({ key: z.string(), createdAt: z.string(), saveMs: z.number(), memoryFile: z.string().optional() });

/** How template RAM is kept on this host: in a shared memory file, or streamed into each state file. */
export type TemplateMemoryMode = { mode: "shared_file"; dir: string } | { mode: "streamed"; reason: string };

/** Linux's tmpfs magic: RAM files elsewhere would make every guest page fault a disk read. */
const TMPFS_MAGIC = 0x01021994;
const MEMORY_FS = "/dev/shm";
const OWNER_FILE = "templates-dir";
const memoryDirPrefix = () => `pyro-${process.getuid?.() ?? 0}-`;

/**
 * Removes this user's RAM directories whose templates directory is gone (a deleted PYRO_HOME, a
 * test's home): nothing can restore from them again, and tmpfs would hold them until reboot.
 * VMs still running from one keep their mapping.
 */
async function sweepOrphanedMemoryDirs(): Promise<void> {
  for (const name of await readdir(MEMORY_FS).catch(() => [] as string[])) {
    if (!name.startsWith(memoryDirPrefix())) continue;
    const dir = join(MEMORY_FS, name);
    const st = await lstat(dir).catch(() => undefined);
    // Only real directories of ours: anything else there is not ours to touch.
    if (!st?.isDirectory() || st.uid !== (process.getuid?.() ?? 0)) continue;
    const owner = await readFile(join(dir, OWNER_FILE), "utf8").catch(() => undefined);
    if (owner !== undefined && !(await pathExists(owner))) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * "shared" maps template RAM from a file on /dev/shm (opt-in); anything else keeps it in the state
 * files. Not the default yet: the baseline snapshot at create streams all guest RAM, which fills the
 * shared file with zero pages unless they are dug out again (~0.8 s of CPU per create) — measured
 * by bench/shared-template-memory.ts: PSS 0.51x, create 1.83x of the streamed path.
 */
const MEMORY_MODE_ENV = "PYRO_TEMPLATE_MEMORY";

/**
 * The private directory on the memory filesystem for this cache's template RAM files. Named after
 * the templates directory (which test homes share through a link), so every pyro using the same
 * templates uses the same RAM files; it is gone after a reboot, and templates are rebuilt then.
 */
export async function templateMemoryMode(paths: PyroPaths, env: NodeJS.ProcessEnv = process.env): Promise<TemplateMemoryMode> {
  if (env[MEMORY_MODE_ENV] !== "shared") return { mode: "streamed", reason: `the default; ${MEMORY_MODE_ENV}=shared maps template RAM from /dev/shm` };
  const fs = await statfs(MEMORY_FS).catch(() => undefined);
  if (!fs || fs.type !== TMPFS_MAGIC) return { mode: "streamed", reason: `${MEMORY_FS} is not a memory filesystem` };
  const templates = await makePrivateSubdir(join(paths.cacheDir, "templates")).then((dir) => realpath(dir));
  const tag = createHash("sha256").update(templates).digest("hex").slice(0, 12);
  const dir = join(MEMORY_FS, `${memoryDirPrefix()}${tag}`);
  try {
    await ensurePrivateDir(dir);
    // Names the templates directory it serves, so a sweep can tell when that one is gone.
    if (!(await pathExists(join(dir, OWNER_FILE)))) await writeFile(join(dir, OWNER_FILE), templates, { mode: PRIVATE_FILE_MODE });
    return { mode: "shared_file", dir };
  } catch (error) {
    return { mode: "streamed", reason: `cannot use ${dir}: ${(error as Error).message}` };
  }
}

/** Everything a saved state depends on: change any of it and the template is rebuilt. */
function templateKey(runtime: GuestRuntime, env: InstalledEnvironment, shape: MachineShape): string {
  return createHash("sha256")
    .update(
      JSON.stringify([
        runtime.accelerator.accel,
        runtime.kernel.package,
        runtime.initramfs.key,
        runtime.qemuIdentity,
        env.spec.name,
        env.manifest.version,
        env.manifest.builtAt,
        shape.vcpuCount,
        shape.memMib,
        shapeDiskGib(shape),
        WORKSPACE_MACHINE_VERSION,
      ]),
    )
    .digest("hex")
    .slice(0, 16);
}

/** Bump when workspaceLaunchSpec changes the machine, so old saved states are not restored into it. */
const WORKSPACE_MACHINE_VERSION = 2;

/**
 * The machine every workspace VM runs as; templates are saved from exactly this shape (G10): the
 * root disk, then the /workspace disk.
 */
export function workspaceLaunchSpec(runtime: GuestRuntime, shape: MachineShape, diskPath: string, workspaceDisk: { path: string; format: "qcow2" | "raw" }, runDir: string, network: VmLaunchSpec["network"] = "none"): VmLaunchSpec {
  return {
    kernelPath: runtime.kernel.vmlinuxPath,
    initramfsPath: runtime.initramfs.path,
    rootDisk: { path: diskPath, format: "qcow2", cache: "writeback" },
    workspaceDisk: { ...workspaceDisk, cache: "writeback" },
    vcpuCount: shape.vcpuCount,
    memMib: shape.memMib,
    hostname: "pyro",
    network,
    runDir,
    bootTimeoutMs: bootTimeoutMs(),
    dieWithParent: false,
    ownsRunDir: false,
  };
}

/** Template directories of one environment and shape start with this; a build id follows the key. */
function templatePrefix(env: InstalledEnvironment, shape: MachineShape): string {
  return templateNamePrefix(env.spec.name, shape);
}

/** How template directories of one environment and shape are named (any key, any build). */
export function templateNamePrefix(environment: string, shape: MachineShape): string {
  // The default disk size keeps the names templates had before disks had a size.
  const disk = shapeDiskGib(shape) === DEFAULT_DISK_GIB ? "" : `${shapeDiskGib(shape)}g-`;
  return `${environmentSlug(environment)}-${shape.vcpuCount}c-${shape.memMib}m-${disk}`;
}

/** Whether any template was ever saved for this environment and shape (current or stale). */
export async function anyTemplateSaved(paths: PyroPaths, environment: string, shape: MachineShape): Promise<boolean> {
  const prefix = templateNamePrefix(environment, shape);
  const entries = await readdir(join(paths.cacheDir, "templates")).catch(() => [] as string[]);
  return entries.some((e) => e.startsWith(prefix) && !e.includes(".partial-"));
}

/**
 * Every build gets its own directory, never replaced: workspace disks stay layered on a template's
 * disk for their whole life, so a template whose RAM file vanished is rebuilt beside the old one.
 */
async function validTemplates(paths: PyroPaths, env: InstalledEnvironment, shape: MachineShape, key: string, memory: TemplateMemoryMode): Promise<BootTemplate[]> {
  const root = join(paths.cacheDir, "templates");
  const found: { template: BootTemplate; createdAt: string }[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!name.startsWith(`${templatePrefix(env, shape)}${key}`) || name.includes(".partial-")) continue;
    const dir = join(root, name);
    const manifest = await readJsonIfValid(join(dir, "manifest.json"), TemplateManifest);
    if (manifest?.key !== key) continue;
    const template: BootTemplate = { key, statePath: join(dir, "state.bin"), diskPath: join(dir, "disk.qcow2"), workspaceDiskPath: join(dir, PLACEHOLDER_DISK) };
    if (manifest.memoryFile) {
      // A RAM file is only trusted inside our own private memory directory.
      if (memory.mode !== "shared_file" || manifest.memoryFile.includes("/")) continue;
      template.memoryPath = join(memory.dir, manifest.memoryFile);
      if (!(await pathExists(template.memoryPath))) continue;
    } else if (memory.mode === "shared_file") continue; // a streamed one is superseded where sharing works
    if ((await pathExists(template.statePath)) && (await pathExists(template.diskPath)) && (await pathExists(template.workspaceDiskPath))) found.push({ template, createdAt: manifest.createdAt });
  }
  return found.sort((a, b) => b.createdAt.localeCompare(a.createdAt)).map((f) => f.template);
}

/** The template if it is already built (no boot). */
export async function findBootTemplate(paths: PyroPaths, runtime: GuestRuntime, env: InstalledEnvironment, shape: MachineShape): Promise<BootTemplate | undefined> {
  const key = templateKey(runtime, env, shape);
  return (await validTemplates(paths, env, shape, key, await templateMemoryMode(paths)))[0];
}

/** Returns the template for this environment and shape, booting and saving one if needed. */
export async function ensureBootTemplate(paths: PyroPaths, runtime: GuestRuntime, env: InstalledEnvironment, shape: MachineShape, onProgress?: (message: string) => void): Promise<BootTemplate> {
  const found = await findBootTemplate(paths, runtime, env, shape);
  if (found) return found;
  onProgress?.(`building the boot template for ${env.spec.name} (${shape.vcpuCount} vCPU, ${shape.memMib} MiB, ${shapeDiskGib(shape)} GiB disk), once per machine shape`);
  const key = templateKey(runtime, env, shape);
  const memory = await templateMemoryMode(paths);
  const build = randomBytes(3).toString("hex");
  const name = `${templatePrefix(env, shape)}${key}-${build}`;
  const dir = join(paths.cacheDir, "templates", name);
  const work = `${dir}.partial-${process.pid}`;
  const runDir = join(paths.runtimeDir, `tpl-${randomBytes(4).toString("hex")}`);
  const memoryFile = memory.mode === "shared_file" ? `${name}.ram` : undefined;
  const memoryPath = memory.mode === "shared_file" ? join(memory.dir, memoryFile!) : undefined;
  await makePrivateSubdir(work);
  try {
    const disk = join(work, "disk.qcow2");
    // The real path: a template outlives the (possibly linked, e.g. per-test) directory it was built from.
    await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["create", "-q", "-f", "qcow2", "-b", await realpath(env.imagePath), "-F", "raw", disk], { privateFiles: true });
    // Never mounted by the template guest (only probed): sparse, so it costs no host disk.
    const placeholder = join(work, PLACEHOLDER_DISK);
    await writeFile(placeholder, "", { mode: PRIVATE_FILE_MODE });
    await truncate(placeholder, diskBytes(shapeDiskGib(shape)));
    const spec = { ...workspaceLaunchSpec(runtime, shape, disk, { path: placeholder, format: "raw" }, runDir), dieWithParent: true, ownsRunDir: true, ...(memoryPath ? { memoryFile: { path: memoryPath, share: true } } : {}) };
    const vm = await runtime.backend.launch(spec);
    const started = Date.now();
    try {
      // Disconnect first: the saved agent then waits for a new host, as every restored copy will.
      vm.agent.close();
      await vm.saveState(join(work, "state.bin"), { skipSharedMemory: Boolean(memoryPath) });
    } finally {
      await vm.dispose();
    }
    // Guest memory (QEMU created the file under umask 077; made sure of here).
    if (memoryPath) await chmod(memoryPath, PRIVATE_FILE_MODE);
    await writeJsonAtomic(join(work, "manifest.json"), { key, createdAt: new Date().toISOString(), saveMs: Date.now() - started, ...(memoryFile ? { memoryFile } : {}) });
    await rename(work, dir);
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    if (memoryPath) await rm(memoryPath, { force: true });
    throw error;
  }
  if (memory.mode === "shared_file") {
    await removeStaleMemoryFiles(memory.dir, join(paths.cacheDir, "templates"), templatePrefix(env, shape), key);
    await sweepOrphanedMemoryDirs();
  }
  const built = (await validTemplates(paths, env, shape, key, memory))[0];
  if (!built) throw new Error(`boot template ${dir} failed validation after build`);
  return built;
}

/** A build boots and saves in well under this; a RAM file without a template dir this old was left by a killed build. */
const ABANDONED_BUILD_MS = 10 * 60_000;

/**
 * RAM files of this environment and shape saved under another key (another kernel, agent, image or
 * QEMU) can never be restored again, nor can those of builds that were killed; they would hold
 * memory until reboot. VMs still running from one keep their mapping (an unlinked file lives on
 * while mapped).
 */
async function removeStaleMemoryFiles(dir: string, templatesDir: string, prefix: string, key: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(prefix) || !name.endsWith(".ram")) continue;
    const path = join(dir, name);
    const otherKey = !name.startsWith(`${prefix}${key}-`);
    const abandoned = !(await pathExists(join(templatesDir, name.slice(0, -".ram".length)))) && Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) > ABANDONED_BUILD_MS;
    if (otherKey || abandoned) await rm(path, { force: true });
  }
}
