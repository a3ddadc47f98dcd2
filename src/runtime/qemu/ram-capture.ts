import { closeSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import { rm } from "node:fs/promises";
import { PyroError } from "../../errors.js";
import { requireExecutable, runHostCommand } from "../../process/host-command.js";

/**
 * Writes the RAM of a paused VM whose RAM is a file mapped copy-on-write (`share=off`) to a new
 * sparse file, without streaming it through QEMU and without touching the file it maps.
 *
 * A page of the mapping is either the VM's own (written since it started: an anonymous private
 * copy, or swapped out) or still the mapped file's page. /proc/<pid>/pagemap tells which; the own
 * pages are read from /proc/<pid>/mem, the rest is the mapped file's content, copied from the file
 * itself with `cp --sparse=always` (which skips its holes). A hole must never be read through the
 * mapping: a fault on a tmpfs hole allocates that page in the shared file, for every VM mapping it.
 */

const PAGE = 4096;
/** pagemap entry bits, in the entry's high 32-bit word: present (63), swapped (62), file-page or shared-anon (61). */
const PRESENT = 1 << 31;
const SWAPPED = 1 << 30;
const FILE_PAGE = 1 << 29;
/** Own pages copied per read/write call. */
const RUN_PAGES = 256;

export interface RamCapture {
  /** Bytes taken from the VM's own pages (the rest came from the mapped file). */
  ownBytes: number;
}

interface Mapping {
  start: number;
  end: number;
  fileOffset: number;
}

/** The VM's mapping of `memoryFile`, from /proc/<pid>/maps (the one mapping of that exact path, writable, private). */
export function findRamMapping(mapsText: string, memoryFile: string): Mapping | undefined {
  const found: Mapping[] = [];
  for (const line of mapsText.split("\n")) {
    // address perms offset dev inode path — the path is the rest of the line (it may hold spaces).
    const match = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \d+ +(.*)$/.exec(line);
    if (!match || match[5] !== memoryFile || match[3] !== "rw-p") continue;
    found.push({ start: Number.parseInt(match[1]!, 16), end: Number.parseInt(match[2]!, 16), fileOffset: Number.parseInt(match[4]!, 16) });
  }
  return found.length === 1 ? found[0] : undefined;
}

/** Whether a pagemap entry's page is the process's own (not the mapped file's). */
export function isOwnPage(highWord: number): boolean {
  return ((highWord & PRESENT) !== 0 && (highWord & FILE_PAGE) === 0) || (highWord & SWAPPED) !== 0;
}

/**
 * Copies the RAM of paused VM `pid` (mapping `memoryFile` of `memBytes`) into `outPath`. Fails with
 * HOST_COMMAND_FAILED when the process's memory cannot be read (another uid, Yama ptrace scope);
 * `outPath` is removed then.
 */
export async function captureMappedRam(pid: number, memoryFile: string, memBytes: number, outPath: string): Promise<RamCapture> {
  const maps = readProc(pid, "maps").toString("utf8");
  const mapping = findRamMapping(maps, memoryFile);
  // From offset 0 only: a restore maps the capture from its start, and the pages written go no further than the guest's size.
  if (mapping?.fileOffset !== 0 || mapping.end - mapping.start < memBytes) {
    throw new PyroError("HOST_COMMAND_FAILED", `the VM (pid ${pid}) has no single private mapping of ${memBytes} bytes of ${memoryFile} from its start`);
  }
  await rm(outPath, { force: true });
  await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", memoryFile, outPath], { privateFiles: true });
  try {
    return copyOwnPages(pid, mapping, memBytes / PAGE, outPath);
  } catch (error) {
    await rm(outPath, { force: true });
    throw error;
  }
}

function copyOwnPages(pid: number, mapping: Mapping, pages: number, outPath: string): RamCapture {
  const entries = Buffer.alloc(pages * 8);
  const pagemap = openProc(pid, "pagemap");
  try {
    readFully(pagemap, entries, (mapping.start / PAGE) * 8);
  } finally {
    closeSync(pagemap);
  }
  const own = (page: number) => isOwnPage(entries.readUInt32LE(page * 8 + 4));
  const mem = openProc(pid, "mem");
  const out = openSync(outPath, "r+");
  const buffer = Buffer.alloc(RUN_PAGES * PAGE);
  let ownPages = 0;
  try {
    for (let page = 0; page < pages; ) {
      if (!own(page)) {
        page++;
        continue;
      }
      let end = page + 1;
      while (end < pages && end - page < RUN_PAGES && own(end)) end++;
      const bytes = (end - page) * PAGE;
      readFully(mem, buffer.subarray(0, bytes), mapping.start + page * PAGE);
      writeSync(out, buffer, 0, bytes, mapping.fileOffset + page * PAGE);
      ownPages += end - page;
      page = end;
    }
  } finally {
    closeSync(mem);
    closeSync(out);
  }
  return { ownBytes: ownPages * PAGE };
}

function readFully(fd: number, into: Buffer, position: number): void {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, into.length - done, position + done);
    if (n <= 0) throw new PyroError("HOST_COMMAND_FAILED", "short read of the VM's memory");
    done += n;
  }
}

function openProc(pid: number, file: string): number {
  try {
    return openSync(`/proc/${pid}/${file}`, "r");
  } catch (error) {
    throw new PyroError("HOST_COMMAND_FAILED", `cannot read /proc/${pid}/${file}: ${(error as Error).message}`);
  }
}

function readProc(pid: number, file: string): Buffer {
  try {
    return readFileSync(`/proc/${pid}/${file}`);
  } catch (error) {
    throw new PyroError("HOST_COMMAND_FAILED", `cannot read /proc/${pid}/${file}: ${(error as Error).message}`);
  }
}
