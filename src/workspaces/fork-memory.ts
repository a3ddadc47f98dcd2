import { createHash, randomBytes } from "node:crypto";
import { open, readdir, rm, rmdir } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { PyroPaths } from "../paths.js";
import { processAlive } from "../process/process-alive.js";
import type { RunningVmControl, VmmBackend } from "../runtime/vmm-backend.js";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "../storage/private-storage.js";
import { FORK_DIR_PREFIX, templateMemoryMode } from "./boot-templates.js";

/**
 * The RAM files forks map. A fork's RAM is one file on the memory filesystem, written once while
 * the source is paused and then mapped copy-on-write by every copy; nothing restores from it later
 * (a stopped fork cold-boots its disk), so it is needed exactly as long as a VM maps it.
 *
 * Named after the pyro process that writes it, with a hidden `.starting` marker beside it while that
 * fork writes it and starts its VMs: until the marker goes (or its writer dies), the file may be
 * about to be mapped; after, only running VMs can still need it. The marker, not the writer being
 * alive, says so: a long-lived writer (`pyro mcp serve`) must not keep a finished fork's file from
 * every other pyro process. Whoever comes by later (delete, reset, stop, the next fork, crash
 * recovery) removes the ones no VM maps.
 */

const FORK_MEMORY = /^fork-(\d+)-[0-9a-f]+\.ram$/;
/** Beside a RAM file while its fork still writes it or starts VMs from it (hidden: it is not a RAM file). */
const STARTING = /^\.fork-(\d+)-[0-9a-f]+\.starting$/;

function startingMarker(ramName: string): string {
  return `.${basename(ramName, ".ram")}.starting`;
}

/**
 * This pyro home's fork RAM files: a private directory of its own inside the memory directory, which
 * every home using the same templates shares. Forks belong to one home's workspaces: another home's
 * cleanup must not see them (it knows only its own VMs), nor one home's listing another's.
 * Undefined where RAM files are not in use (streamed mode). Not created here: it exists only while
 * it holds a fork's file (newForkMemoryPath makes it, the release that empties it removes it), so
 * homes that are gone (every test's) leave nothing on the memory filesystem.
 */
export async function forkMemoryDir(paths: PyroPaths): Promise<string | undefined> {
  const memory = await templateMemoryMode(paths);
  if (memory.mode !== "shared_file") return undefined;
  const home = createHash("sha256").update(resolve(paths.stateDir)).digest("hex").slice(0, 12);
  return join(memory.dir, `${FORK_DIR_PREFIX}${home}`);
}

/** Where the next fork's RAM goes, or undefined where RAM files are not in use (streamed mode). */
export async function newForkMemoryPath(paths: PyroPaths): Promise<string | undefined> {
  const dir = await forkMemoryDir(paths);
  if (!dir) return undefined;
  const path = join(dir, `fork-${process.pid}-${randomBytes(6).toString("hex")}.ram`);
  // Another pyro's release may remove the directory, empty, between its creation and the marker's:
  // then it is made again (the marker, once there, keeps it).
  for (let attempt = 1; ; attempt++) {
    await ensurePrivateDir(dir);
    try {
      await (await open(join(dir, startingMarker(basename(path))), "wx", PRIVATE_FILE_MODE)).close();
      return path;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || attempt === 3) throw error;
    }
  }
}

/** Removes a fork directory if it is empty (and only then: rmdir refuses a directory that is not). */
export async function removeEmptyForkDir(dir: string): Promise<void> {
  await rmdir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST" && error.code !== "ENOENT") throw error;
  });
}

/** Removes the fork RAM files no running VM maps and no live pyro process is still writing. Returns how many went. */
export async function releaseUnmappedForkMemory(paths: PyroPaths, backend: () => Promise<RunningVmControl>): Promise<number> {
  const dir = await forkMemoryDir(paths);
  if (!dir) return 0;
  const names = await readdir(dir).catch(() => undefined);
  if (!names) return 0;
  const present = new Set(names);
  const candidates = names.filter((name) => {
    const ram = FORK_MEMORY.exec(name);
    // Still being written, or its VMs still starting, by a live fork.
    if (ram) return !(present.has(startingMarker(name)) && processAlive(Number(ram[1])));
    // A dead fork's marker goes too.
    const marker = STARTING.exec(name);
    return marker !== null && !processAlive(Number(marker[1]));
  });
  let removed = 0;
  if (candidates.length) {
    const inUse = await (await backend()).memoryFilesInUse();
    for (const name of candidates) {
      const path = join(dir, name);
      if (inUse.has(path)) continue;
      await rm(path, { force: true });
      if (FORK_MEMORY.test(name)) removed++;
    }
  }
  await removeEmptyForkDir(dir);
  return removed;
}

/** The fork that wrote `path` has started its VMs (or failed): the file goes as soon as none maps it. */
export async function finishForkMemory(path: string, backend: VmmBackend): Promise<void> {
  await rm(join(dirname(path), startingMarker(basename(path))), { force: true });
  if ((await backend.memoryFilesInUse()).has(path)) return;
  await rm(path, { force: true });
  await removeEmptyForkDir(dirname(path));
}
