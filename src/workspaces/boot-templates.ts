import { createHash, randomBytes } from "node:crypto";
import { chmod, lstat, readdir, readFile, realpath, rename, rm, rmdir, stat, statfs, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { environmentSlug } from "../environments/catalog.js";
import type { InstalledEnvironment } from "../environments/environment-store.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import type { GuestRuntime } from "../runtime/guest-runtime.js";
import type { RunningVm, VmLaunchSpec } from "../runtime/vmm-backend.js";
import { giveVmItsOwnIdentity } from "../runtime/vm-identity.js";
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
  /** Its directory's name under <cache>/templates: how a workspace whose baseline it is names it. */
  name: string;
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

/** Names inside a template directory. */
const TEMPLATE_FILES = { state: "state.bin", disk: "disk.qcow2", workspacePlaceholder: "workspace-placeholder.raw" } as const;

/** A template's files in its directory. */
function templateAt(dir: string, name: string, key: string): BootTemplate {
  return {
    name,
    key,
    statePath: join(dir, TEMPLATE_FILES.state),
    diskPath: join(dir, TEMPLATE_FILES.disk),
    workspaceDiskPath: join(dir, TEMPLATE_FILES.workspacePlaceholder),
  };
}

export interface MachineShape {
  vcpuCount: number;
  memMib: number;
  /** Size of the /workspace disk (default DEFAULT_DISK_GIB): part of the machine a state restores into. */
  diskGib?: number;
}

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
    else await removeEmptyForkDirs(dir);
  }
}

/** Each pyro home's fork RAM directory inside a memory directory is named this, then a hash of its state dir. */
export const FORK_DIR_PREFIX = "forks-";

/**
 * Removes the empty fork directories of homes that are gone (earlier versions made one per
 * home and never removed it; today a fork directory goes with its last file). rmdir refuses one
 * that holds anything, and a fork that loses its new directory to this makes it again.
 */
async function removeEmptyForkDirs(memoryDir: string): Promise<void> {
  for (const name of await readdir(memoryDir).catch(() => [] as string[])) {
    if (name.startsWith(FORK_DIR_PREFIX)) await rmdir(join(memoryDir, name)).catch(() => undefined);
  }
}

/**
 * Template RAM is a file on /dev/shm wherever that is a memory filesystem we can use; "streamed"
 * here keeps it in the state files instead (every restore then loads all of it).
 */
const MEMORY_MODE_ENV = "PYRO_TEMPLATE_MEMORY";

/**
 * The private directory on the memory filesystem for this cache's template RAM files. Named after
 * the templates directory (which test homes share through a link), so every pyro using the same
 * templates uses the same RAM files; it is gone after a reboot, and templates are rebuilt then.
 */
export async function templateMemoryMode(paths: PyroPaths, env: NodeJS.ProcessEnv = process.env): Promise<TemplateMemoryMode> {
  if (env[MEMORY_MODE_ENV] === "streamed") return { mode: "streamed", reason: `${MEMORY_MODE_ENV}=streamed is set` };
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

/**
 * Whether a VM gets free page reporting (see VmLaunchSpec.freePageReporting): every VM whose guest
 * kernel has the balloon driver, except copy-on-write RAM-file VMs where private-ram-discard is not
 * built (there QEMU would punch the shared file). The answer must be the same for a template and
 * every VM restored from it, or from a snapshot of one: it depends on the host's mode, the library
 * and the NIC only.
 */
export function freePageReportingFor(runtime: GuestRuntime, memory: TemplateMemoryMode, network: VmLaunchSpec["network"]): boolean {
  return runtime.memoryReturn && (memory.mode === "streamed" || network !== "none" || runtime.privateRamDiscard !== undefined);
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
        runtime.memoryReturn,
        runtime.privateRamDiscard !== undefined,
        shapeDiskGib(shape),
        WORKSPACE_MACHINE_VERSION,
        TEMPLATE_CONTENT_VERSION,
      ]),
    )
    .digest("hex")
    .slice(0, 16);
}

/** Bump when what a template guest does before its save changes (2: warmUp). */
const TEMPLATE_CONTENT_VERSION = 2;

/**
 * Bump when workspaceLaunchSpec changes the machine, so old saved states are not restored into it
 * (4: the /workspace disk beside the root disk, with shared memory and tb-size).
 */
const WORKSPACE_MACHINE_VERSION = 4;

/**
 * The machine every workspace VM runs as; templates are saved from exactly this shape (G10): the
 * root disk, then the /workspace disk.
 */
export function workspaceLaunchSpec(
  runtime: GuestRuntime,
  shape: MachineShape,
  diskPath: string,
  workspaceDisk: { path: string; format: "qcow2" | "raw" },
  runDir: string,
  memory: TemplateMemoryMode,
  network: VmLaunchSpec["network"] = "none",
): VmLaunchSpec {
  return {
    freePageReporting: freePageReportingFor(runtime, memory, network),
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
async function validTemplates(
  paths: PyroPaths,
  env: InstalledEnvironment,
  shape: MachineShape,
  key: string,
  memory: TemplateMemoryMode,
): Promise<BootTemplate[]> {
  const root = join(paths.cacheDir, "templates");
  const found: { template: BootTemplate; createdAt: string }[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!name.startsWith(`${templatePrefix(env, shape)}${key}`) || name.includes(".partial-")) continue;
    const dir = join(root, name);
    const manifest = await readJsonIfValid(join(dir, "manifest.json"), TemplateManifest);
    if (manifest?.key !== key) continue;
    const template = templateAt(dir, name, key);
    if (manifest.memoryFile) {
      // A RAM file is only trusted inside our own private memory directory.
      if (memory.mode !== "shared_file" || manifest.memoryFile.includes("/")) continue;
      template.memoryPath = join(memory.dir, manifest.memoryFile);
      if (!(await pathExists(template.memoryPath))) continue;
    } else if (memory.mode === "shared_file") continue; // a streamed one is superseded where sharing works
    if ((await pathExists(template.statePath)) && (await pathExists(template.diskPath)) && (await pathExists(template.workspaceDiskPath)))
      found.push({ template, createdAt: manifest.createdAt });
  }
  return found.sort((a, b) => b.createdAt.localeCompare(a.createdAt)).map((f) => f.template);
}

/** Template directory names: what templateNamePrefix and a build make, nothing that could leave the directory. */
const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]*$/;

/**
 * A template by its directory name, current or not (a workspace's baseline keeps naming the one it
 * was created from). `restorable` is false when its saved state can no longer be resumed (its RAM
 * file is gone, after a reboot or a rebuild): its disk is still there to boot from.
 */
export async function templateByName(paths: PyroPaths, name: string): Promise<{ template: BootTemplate; restorable: boolean } | undefined> {
  if (!TEMPLATE_NAME.test(name) || name.includes(".partial-")) return undefined;
  const dir = join(paths.cacheDir, "templates", name);
  const manifest = await readJsonIfValid(join(dir, "manifest.json"), TemplateManifest);
  if (!manifest) return undefined;
  const template = templateAt(dir, name, manifest.key);
  if (!(await pathExists(template.diskPath))) return undefined;
  let restorable = await pathExists(template.statePath);
  if (manifest.memoryFile) {
    const memory = await templateMemoryMode(paths);
    const memoryPath = memory.mode === "shared_file" && !manifest.memoryFile.includes("/") ? join(memory.dir, manifest.memoryFile) : undefined;
    if (memoryPath && (await pathExists(memoryPath))) template.memoryPath = memoryPath;
    else restorable = false;
  }
  return { template, restorable };
}

/** The template if it is already built (no boot). */
export async function findBootTemplate(
  paths: PyroPaths,
  runtime: GuestRuntime,
  env: InstalledEnvironment,
  shape: MachineShape,
): Promise<BootTemplate | undefined> {
  const key = templateKey(runtime, env, shape);
  return (await validTemplates(paths, env, shape, key, await templateMemoryMode(paths)))[0];
}

/** Returns the template for this environment and shape, booting and saving one if needed. */
export async function ensureBootTemplate(
  paths: PyroPaths,
  runtime: GuestRuntime,
  env: InstalledEnvironment,
  shape: MachineShape,
  onProgress?: (message: string) => void,
): Promise<BootTemplate> {
  const found = await findBootTemplate(paths, runtime, env, shape);
  if (found) return found;
  onProgress?.(
    `building the boot template for ${env.spec.name} (${shape.vcpuCount} vCPU, ${shape.memMib} MiB, ${shapeDiskGib(shape)} GiB disk), once per machine shape`,
  );
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
    const disk = join(work, TEMPLATE_FILES.disk);
    // The real path: a template outlives the (possibly linked, e.g. per-test) directory it was built from.
    await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["create", "-q", "-f", "qcow2", "-b", await realpath(env.imagePath), "-F", "raw", disk], {
      privateFiles: true,
    });
    // Never mounted by the template guest (only probed): sparse, so it costs no host disk.
    const placeholder = join(work, TEMPLATE_FILES.workspacePlaceholder);
    await writeFile(placeholder, "", { mode: PRIVATE_FILE_MODE });
    await truncate(placeholder, diskBytes(shapeDiskGib(shape)));
    const spec = {
      ...workspaceLaunchSpec(runtime, shape, disk, { path: placeholder, format: "raw" }, runDir, memory),
      dieWithParent: true,
      ownsRunDir: true,
      ...(memoryPath ? { memoryFile: { path: memoryPath, share: true } } : {}),
    };
    const vm = await runtime.backend.launch(spec);
    const started = Date.now();
    try {
      await warmUp(vm);
      // Disconnect first: the saved agent then waits for a new host, as every restored copy will.
      vm.agent.close();
      await vm.saveState(join(work, TEMPLATE_FILES.state), { skipSharedMemory: Boolean(memoryPath) });
    } finally {
      await vm.dispose();
    }
    // Guest memory (QEMU created the file under umask 077; made sure of here).
    if (memoryPath) await chmod(memoryPath, PRIVATE_FILE_MODE);
    await writeJsonAtomic(join(work, "manifest.json"), {
      key,
      createdAt: new Date().toISOString(),
      saveMs: Date.now() - started,
      ...(memoryFile ? { memoryFile } : {}),
    });
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

/**
 * Runs, before the save, what every restored copy runs first: its identity, a command. The files
 * those read (the dynamic loader, libc, sh, /etc) are then in the template's page cache, which its
 * copies share, instead of each copy reading them from its disk under TCG. Synced, so no copy
 * inherits dirty pages to write back.
 */
async function warmUp(vm: RunningVm): Promise<void> {
  await giveVmItsOwnIdentity(vm, "pyro");
  for (const command of WARM_UP_COMMANDS) await vm.agent.exec({ command, cwd: "/", timeoutMs: 30_000 });
  await vm.agent.sync();
}

/** What warmUp runs: the loader and libc (any dynamic binary), the shell, and what a command's environment reads. */
const WARM_UP_COMMANDS = [["true"], ["sh", "-c", ":"]];

/** The RAM file of a template's mounted baseline (mounted-baseline.ts), named after the template it belongs to. */
export function mountedBaselineMemoryName(templateName: string, build: string): string {
  return `${templateName}.ws-${build}.ram`;
}

/** The directory a RAM file belongs to: its template's, or a mounted baseline's inside it. */
function memoryFileOwner(templatesDir: string, name: string): string {
  const mounted = /^(.+)\.(ws-[0-9a-f]+)\.ram$/.exec(name);
  return mounted ? join(templatesDir, mounted[1]!, mounted[2]!) : join(templatesDir, name.slice(0, -".ram".length));
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
    const abandoned =
      !(await pathExists(memoryFileOwner(templatesDir, name))) &&
      Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) > ABANDONED_BUILD_MS;
    if (otherKey || abandoned) await rm(path, { force: true });
  }
}
