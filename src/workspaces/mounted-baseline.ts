import { randomBytes } from "node:crypto";
import { chmod, link, lstat, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { z } from "zod";
import type { PyroPaths } from "../paths.js";
import { processAlive } from "../process/process-alive.js";
import type { GuestRuntime } from "../runtime/guest-runtime.js";
import { pathExists } from "../storage/path-exists.js";
import { makePrivateSubdir, PRIVATE_FILE_MODE } from "../storage/private-storage.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import { copyOverlayOnto, createEmptyOverlay } from "../storage/qcow2-overlay.js";
import { type BootTemplate, type MachineShape, mountedBaselineMemoryName, templateMemoryMode, workspaceLaunchSpec } from "./boot-templates.js";
import { replaceDisk } from "./disk-chain.js";
import { cachedImagePath } from "./empty-seed-image.js";

/**
 * A boot template's VM one step further, for workspaces whose /workspace disk is the shared empty
 * image (no seed): restored from the template with an overlay on that image as its /workspace
 * disk, /workspace mounted, synced and saved (its RAM as a file on the memory filesystem, its
 * device state, and the overlay the mount wrote). A reset to the baseline restores this instead of
 * the template and finds /workspace mounted: under TCG every new VM translates the guest code it
 * runs afresh, and ext4's mount was ~70–90 ms of a ~270 ms reset.
 *
 * Memory and disk agree because the reset's /workspace disk is a copy of the saved overlay, named
 * onto the workspace's own seed.ext4, which is the same file (a hard link of one inode) as the
 * image the saved VM mounted. Nothing is layered on these files: a workspace copies the overlay and
 * its root disk stays on the template's, so a stale one can go at any time. Built on the first
 * reset that can use it; rebuilt when its RAM file is gone (reboot) or another key replaced the
 * template (the template's RAM files go then, see removeStaleMemoryFiles).
 */
export interface MountedBaseline {
  statePath: string;
  memoryPath: string;
  /** The /workspace overlay the saved VM mounted, on `seedImage`. */
  workspaceOverlay: string;
  /** A hard link of the empty image the saved VM mounted. */
  seedImage: string;
}

const FILES = { state: "state.bin", workspace: "workspace.qcow2", seed: "seed.ext4", manifest: "manifest.json" } as const;
/** Directories inside a template's directory: `ws-<build>`. */
const DIR = /^ws-([0-9a-f]+)$/;
/** A build's directory until it is complete, named after the pyro process building it. */
const PARTIAL = /^ws-([0-9a-f]+)\.partial-(\d+)$/;
const Manifest = z.object({ memoryFile: z.string(), createdAt: z.string() });

function at(dir: string, memoryPath: string): MountedBaseline {
  return { statePath: join(dir, FILES.state), memoryPath, workspaceOverlay: join(dir, FILES.workspace), seedImage: join(dir, FILES.seed) };
}

function templateDir(template: BootTemplate): string {
  return dirname(template.statePath);
}

/** The newest usable one for this template; those whose RAM file is gone are removed (nothing depends on them). */
async function findMountedBaseline(template: BootTemplate, memoryDir: string): Promise<MountedBaseline | undefined> {
  const dir = templateDir(template);
  const found: { baseline: MountedBaseline; createdAt: string }[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const partial = PARTIAL.exec(name);
    // A build killed midway (its VM died with it): its files go, the RAM file on the memory filesystem too.
    if (partial && !processAlive(Number(partial[2]))) {
      await rm(join(memoryDir, mountedBaselineMemoryName(template.name, partial[1]!)), { force: true });
      await rm(join(dir, name), { recursive: true, force: true });
    }
    const build = DIR.exec(name)?.[1];
    if (!build) continue;
    const manifest = await readJsonIfValid(join(dir, name, FILES.manifest), Manifest);
    // Only the name this build gives its RAM file, in our own private memory directory, is trusted.
    if (manifest?.memoryFile !== mountedBaselineMemoryName(template.name, build)) continue;
    const baseline = at(join(dir, name), join(memoryDir, manifest.memoryFile));
    if (!(await pathExists(baseline.memoryPath))) {
      await rm(join(dir, name), { recursive: true, force: true });
      continue;
    }
    // Its empty image is linked from nowhere else: the cache (or the whole PYRO_HOME) it was made
    // for is gone, with every workspace that used it, so nothing can reset to it again. Homes that
    // share templates (test files, CI) each build their own, and tmpfs would keep each RAM file
    // until reboot. (A workspace resetting to it holds a link of that image: it is never this one.)
    if (((await fileIdentity(baseline.seedImage))?.nlink ?? 0n) <= 1n) {
      await rm(baseline.memoryPath, { force: true });
      await rm(join(dir, name), { recursive: true, force: true });
      continue;
    }
    found.push({ baseline, createdAt: manifest.createdAt });
  }
  return found.sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0]?.baseline;
}

type FileIdentity = { dev: bigint; ino: bigint; nlink: bigint };

/** The file at `path` (a link there is not followed), or undefined if there is none. */
function fileIdentity(path: string): Promise<FileIdentity | undefined> {
  return lstat(path, { bigint: true }).catch(() => undefined);
}

/** Whether both are one file (one inode). */
function sameFile(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  return a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino;
}

/**
 * The mounted baseline a workspace with this seed image can reset to (built now if there is none),
 * or undefined: the seed is not the shared empty image, the template's RAM is not a file, or the
 * build failed (the caller restores the template and mounts, as before).
 */
export async function mountedBaselineFor(
  paths: PyroPaths,
  runtime: GuestRuntime,
  template: BootTemplate,
  shape: Required<MachineShape>,
  seedImage: string,
): Promise<MountedBaseline | undefined> {
  if (!template.memoryPath) return undefined;
  // The seed is looked at once, and first: most seeds are not the empty image, and need no memory mode.
  const empty = cachedImagePath(paths, shape.diskGib);
  const [seed, emptyImage] = await Promise.all([fileIdentity(seedImage), fileIdentity(empty)]);
  if (!sameFile(seed, emptyImage)) return undefined;
  const memory = await templateMemoryMode(paths);
  if (memory.mode !== "shared_file") return undefined;
  const found = await findMountedBaseline(template, memory.dir);
  if (found && sameFile(await fileIdentity(found.seedImage), seed)) return found;
  try {
    return await buildMountedBaseline(runtime, template, shape, empty, memory.dir, paths.runtimeDir);
  } catch {
    return undefined;
  }
}

async function buildMountedBaseline(
  runtime: GuestRuntime,
  template: BootTemplate,
  shape: Required<MachineShape>,
  emptyImage: string,
  memoryDir: string,
  runtimeDir: string,
): Promise<MountedBaseline> {
  const build = randomBytes(3).toString("hex");
  const dir = join(templateDir(template), `ws-${build}`);
  const work = `${dir}.partial-${process.pid}`;
  const memoryPath = join(memoryDir, mountedBaselineMemoryName(template.name, build));
  const runDir = join(runtimeDir, `tpl-${randomBytes(4).toString("hex")}`);
  await makePrivateSubdir(work);
  try {
    const files = at(work, memoryPath);
    await link(emptyImage, files.seedImage);
    await createEmptyOverlay(files.workspaceOverlay, files.seedImage, "raw");
    // The root disk must stay the template's: the saved VM writes nothing to it, which is checked.
    const root = join(work, "root-check.qcow2");
    await createEmptyOverlay(root, template.diskPath, "qcow2");
    const rootBytes = (await stat(root)).size;
    const vm = await runtime.backend.launch({
      ...workspaceLaunchSpec(runtime, shape, root, { path: files.workspaceOverlay, format: "qcow2" }, runDir, { mode: "shared_file", dir: memoryDir }),
      dieWithParent: true,
      ownsRunDir: true,
      incomingState: template.statePath,
      memoryFile: { path: template.memoryPath!, share: false },
    });
    try {
      await vm.agent.mountWorkspace(60_000);
      await vm.agent.sync();
      // As for the template: the saved agent waits for a new host, as every restored copy will.
      vm.agent.close();
      const saved = await vm.saveMappedState(files.statePath, memoryPath);
      if (saved.kind !== "mapped") throw new Error(`the VM's RAM could not be saved as a file: ${saved.reason}`);
    } finally {
      await vm.dispose();
    }
    if ((await stat(root)).size !== rootBytes) throw new Error("the saved VM wrote to its root disk");
    await rm(root);
    await chmod(memoryPath, PRIVATE_FILE_MODE);
    await writeJsonAtomic(join(work, FILES.manifest), { memoryFile: mountedBaselineMemoryName(template.name, build), createdAt: new Date().toISOString() });
    await rename(work, dir);
    return at(dir, memoryPath);
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    await rm(memoryPath, { force: true });
    throw error;
  }
}

/**
 * Makes `workspaceDisk` (atomically) a copy of the mounted baseline's /workspace overlay, on the
 * workspace's own `seedImage` (the same file as the one the baseline mounted, see mountedBaselineFor).
 * False, with the disk left as it was, when the overlay cannot be copied (another pyro removed a
 * stale baseline meanwhile): the caller takes the template's path, which costs time, never data.
 */
export async function copyMountedWorkspaceDisk(baseline: MountedBaseline, workspaceDisk: string, seedImage: string): Promise<boolean> {
  try {
    await replaceDisk(workspaceDisk, (partial) => copyOverlayOnto(baseline.workspaceOverlay, partial, seedImage));
    return true;
  } catch {
    return false;
  }
}
