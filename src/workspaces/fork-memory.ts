import { randomBytes } from "node:crypto";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { PyroPaths } from "../paths.js";
import { processAlive } from "../process/process-alive.js";
import type { VmmBackend } from "../runtime/vmm-backend.js";
import { templateMemoryMode } from "./boot-templates.js";

/**
 * The RAM files forks map. A fork's RAM is one file on the memory filesystem, written once while
 * the source is paused and then mapped copy-on-write by every copy; nothing restores from it later
 * (a stopped fork cold-boots its disk), so it is needed exactly as long as a VM maps it.
 *
 * Named after the pyro process that writes it: until that process is gone, the file may be about
 * to be mapped; after, only running VMs can still need it. Whoever comes by later (delete, reset,
 * stop, the next fork, crash recovery) removes the ones no VM maps.
 */

const FORK_MEMORY = /^fork-(\d+)-[0-9a-f]+\.ram$/;
/** This process's fork RAM files whose VMs are still being started. */
const inFlight = new Set<string>();

/** Where the next fork's RAM goes, or undefined where RAM files are not in use (streamed mode). */
export async function newForkMemoryPath(paths: PyroPaths): Promise<string | undefined> {
  const memory = await templateMemoryMode(paths);
  if (memory.mode !== "shared_file") return undefined;
  const path = join(memory.dir, `fork-${process.pid}-${randomBytes(6).toString("hex")}.ram`);
  inFlight.add(path);
  return path;
}

/** Removes the fork RAM files no running VM maps and no live pyro process is still writing. Returns how many went. */
export async function releaseUnmappedForkMemory(paths: PyroPaths, backend: () => Promise<VmmBackend>): Promise<number> {
  const memory = await templateMemoryMode(paths);
  if (memory.mode !== "shared_file") return 0;
  const candidates = (await readdir(memory.dir).catch(() => [] as string[])).filter((name) => {
    const match = FORK_MEMORY.exec(name);
    if (!match) return false;
    const writer = Number(match[1]);
    return writer === process.pid ? !inFlight.has(join(memory.dir, name)) : !processAlive(writer);
  });
  if (!candidates.length) return 0;
  const inUse = await (await backend()).memoryFilesInUse();
  let removed = 0;
  for (const name of candidates) {
    const path = join(memory.dir, name);
    if (inUse.has(path)) continue;
    await rm(path, { force: true });
    removed++;
  }
  return removed;
}

/** The fork that wrote `path` has started its VMs (or failed): the file goes as soon as none maps it. */
export async function finishForkMemory(path: string, backend: VmmBackend): Promise<void> {
  inFlight.delete(path);
  if (!(await backend.memoryFilesInUse()).has(path)) await rm(path, { force: true });
}
