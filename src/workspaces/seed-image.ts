import { constants, createWriteStream, lstatSync, readdirSync, readlinkSync, type Stats } from "node:fs";
import { chmod, link, lstat, lutimes, mkdir, open, readlink, realpath, rename, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { PyroError } from "../errors.js";
import { requireExecutable } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { unsafeRelativePath } from "./git-input.js";
import { MAX_SEED_ENTRIES } from "./seed-files.js";
import { type ManifestEntry, ManifestWriter, manifestEntries } from "./tree-manifest.js";
import { WORKSPACE_DISK_GIB } from "./workspace-limits.js";

/**
 * /workspace's filesystem, built on the host: `mkfs.ext4 -d` copies a directory into a new ext4
 * image at host speed (the guest's CPU under TCG is ~15x slower, and never touches the seed). The
 * image is the workspace's immutable seed: its data disk is a qcow2 overlay on it, and diff compares
 * against what it holds. mkfs runs inside host-sandbox with the seed directory bound read-only.
 */

export const DEFAULT_DISK_GIB = WORKSPACE_DISK_GIB.default;
const MIN_DISK_GIB = WORKSPACE_DISK_GIB.min;
const MAX_DISK_GIB = WORKSPACE_DISK_GIB.max;
/** ext4's default bytes-per-inode: how many files a disk of a given size can hold. */
const BYTES_PER_INODE = 16_384;
const BLOCK = 4096;
/** Journal, group descriptors, bitmaps and a margin, beyond the inode tables. */
const FIXED_OVERHEAD_BYTES = 160 * 1024 * 1024;
const MKFS_TIMEOUT_MS = 900_000;
const MKFS_LIMITS = { cpuSeconds: 900, addressSpaceBytes: 4 * 2 ** 30 };

export function checkDiskGib(gib: number): number {
  if (!Number.isInteger(gib) || gib < MIN_DISK_GIB || gib > MAX_DISK_GIB)
    throw new PyroError("INVALID_ARGUMENT", `disk size must be ${MIN_DISK_GIB}-${MAX_DISK_GIB} GiB, got ${gib}`);
  return gib;
}

export function diskBytes(gib: number): number {
  return gib * 2 ** 30;
}

/** What goes into /workspace: a host directory, optionally only the listed paths under it. */
export interface SeedSource {
  root: string;
  /**
   * Paths relative to `root` to include (their parent directories come along); everything else is
   * left out. Without it, the whole tree.
   */
  paths?: readonly string[];
}

export interface SkippedEntry {
  path: string;
  reason: string;
}

export interface SeedScan {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
  skipped: SkippedEntry[];
  /** What the image will hold, for diff's baseline: encoded as it is scanned (read with manifestEntries or seedEntries). */
  manifest: ManifestWriter;
  /** Whether the seed has its own lost+found (mkfs's is removed otherwise). */
  hasLostFound: boolean;
  /** Whether mkfs can read the root as it is, or needs a staging tree (a path list, skipped entries). */
  needsStaging: boolean;
  /** Bytes the entries take on disk (blocks rounded up), for the fit check. */
  allocatedBytes: number;
}

const mine = { uid: process.getuid?.() ?? 0, gids: new Set([process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])]) };

/** Whether the sandboxed mkfs (our uid, no capabilities: no DAC override even as root) may read it. */
function readable(st: Stats, bits: number): boolean {
  const shift = st.uid === mine.uid ? 6 : mine.gids.has(st.gid) ? 3 : 0;
  return ((st.mode >> shift) & bits) === bits;
}

function classify(st: Stats): { type: ManifestEntry["type"] } | { skip: string } {
  if (st.isSymbolicLink()) return { type: "l" };
  if (st.isDirectory()) return readable(st, 5) ? { type: "d" } : { skip: "directory not readable" };
  if (st.isFile()) return readable(st, 4) ? { type: "f" } : { skip: "file not readable" };
  return { skip: st.isFIFO() ? "FIFO" : st.isSocket() ? "socket" : "device file" };
}

function entryOf(path: string, st: Stats, type: ManifestEntry["type"], target: string): ManifestEntry {
  return {
    path,
    type,
    mode: st.mode & 0o7777,
    size: type === "f" ? st.size : type === "l" ? Buffer.byteLength(target) : 0,
    mtimeNs: 0n,
    ctimeNs: 0n,
    ino: 0,
    nlink: st.nlink,
    target,
  };
}

/**
 * Walks the seed (never following a symlink: each entry is lstat'ed where its parent directory was
 * read) and decides what goes in. Unreadable and special entries are skipped and reported, not fatal.
 * Synchronous: ~1 µs per entry, where the promise API costs ~10x that on a 200k-file tree.
 */
export function scanSeed(source: SeedSource): SeedScan {
  const scan: SeedScan = {
    files: 0,
    directories: 0,
    symlinks: 0,
    bytes: 0,
    skipped: [],
    manifest: new ManifestWriter(),
    hasLostFound: false,
    needsStaging: source.paths !== undefined,
    allocatedBytes: 0,
  };
  const top = lstatSync(source.root, { throwIfNoEntry: false });
  if (!top?.isDirectory()) throw new PyroError("INVALID_ARGUMENT", `${source.root} is not a directory`);
  if (!readable(top, 5)) throw new PyroError("INVALID_ARGUMENT", `${source.root} is not readable`);
  const add = (rel: string, st: Stats): boolean => {
    const kind = classify(st);
    if ("skip" in kind) {
      scan.skipped.push({ path: rel, reason: kind.skip });
      scan.needsStaging = true;
      return false;
    }
    const target = kind.type === "l" ? readlinkSync(join(source.root, rel), "utf8") : "";
    scan.manifest.add(entryOf(rel, st, kind.type, target));
    if (scan.manifest.count > MAX_SEED_ENTRIES) throw tooMany();
    if (rel === "lost+found") scan.hasLostFound = true;
    if (kind.type === "f") {
      scan.files++;
      scan.bytes += st.size;
      scan.allocatedBytes += Math.ceil(st.size / BLOCK) * BLOCK;
    } else if (kind.type === "d") {
      scan.directories++;
      scan.allocatedBytes += BLOCK;
    } else {
      scan.symlinks++;
      if (target.length >= 60) scan.allocatedBytes += BLOCK; // longer targets leave the inode
    }
    return kind.type === "d";
  };
  const tooMany = () => new PyroError("INVALID_ARGUMENT", `${source.root} holds more than ${MAX_SEED_ENTRIES} entries; seed a smaller directory`);
  if (source.paths) {
    // Refused before any lstat: millions of names cost memory and time even when the files are empty.
    if (source.paths.length > MAX_SEED_ENTRIES) throw tooMany();
    /** Entries already taken (or refused), and for each why nothing below it can go in (null: a usable directory). */
    const seen = new Map<string, string | null>();
    for (const raw of source.paths) {
      // One bad name is skipped and reported, never a reason to fail the whole seed.
      const problem = unsafeRelativePath(raw);
      if (problem) {
        scan.skipped.push({ path: raw, reason: problem });
        continue;
      }
      const rel = raw;
      // Parents first (each a real directory, never a symlink), then the entry itself.
      const parts = rel.split("/");
      // Parents first (each a real, readable directory, never a symlink), then the entry itself.
      for (let i = 1; i <= parts.length; i++) {
        const prefix = parts.slice(0, i).join("/");
        const last = i === parts.length;
        if (!seen.has(prefix)) {
          let st: Stats | undefined;
          try {
            st = lstatSync(join(source.root, prefix), { throwIfNoEntry: false });
          } catch {
            st = undefined; // ENOTDIR and the like: something above changed since
          }
          if (!st) {
            scan.skipped.push({ path: prefix, reason: "vanished before it could be read" });
            break;
          }
          if (!last && !st.isDirectory()) {
            // Not recorded: the path may be listed itself, and then goes in as what it is.
            scan.skipped.push({ path: rel, reason: `'${prefix}' is not a directory` });
            break;
          }
          seen.set(prefix, add(prefix, st) ? null : `'${prefix}' is not a directory`);
        }
        const why = seen.get(prefix);
        if (!last && why) {
          scan.skipped.push({ path: rel, reason: why });
          break;
        }
      }
    }
    return scan;
  }
  const pending = [""];
  while (pending.length) {
    const dir = pending.pop()!;
    let raw: Buffer[];
    try {
      raw = readdirSync(join(source.root, dir), { encoding: "buffer" });
    } catch (error) {
      scan.skipped.push({ path: dir, reason: `cannot list: ${(error as NodeJS.ErrnoException).code ?? error}` });
      scan.needsStaging = true;
      continue;
    }
    const names: string[] = [];
    for (const bytes of raw) {
      const name = bytes.toString("utf8");
      if (Buffer.from(name, "utf8").equals(bytes)) names.push(name);
      else {
        // Its text form names another file (or none): left out of the image as well, so the image
        // holds what the baseline says.
        scan.skipped.push({ path: dir ? `${dir}/${name}` : name, reason: "name is not valid UTF-8" });
        scan.needsStaging = true;
      }
    }
    names.sort();
    for (const name of names) {
      const rel = dir ? `${dir}/${name}` : name;
      const st = lstatSync(join(source.root, rel), { throwIfNoEntry: false });
      if (!st) continue; // removed while walking
      if (add(rel, st)) pending.push(rel);
    }
  }
  return scan;
}

/** The scanned entries, one at a time, in scan order. */
export function seedEntries(scan: SeedScan): Iterable<ManifestEntry> {
  return manifestEntries(scan.manifest.bytes());
}

/** Fails before anything is created when the seed cannot fit a disk of this size. */
export function checkSeedFits(scan: SeedScan, gib: number): void {
  const size = diskBytes(gib);
  const inodes = Math.floor(size / BYTES_PER_INODE);
  const usable = size - inodes * 256 - FIXED_OVERHEAD_BYTES;
  const entries = scan.files + scan.directories + scan.symlinks;
  const needGib = Math.ceil((scan.allocatedBytes + FIXED_OVERHEAD_BYTES) / (2 ** 30 * (1 - 256 / BYTES_PER_INODE)));
  if (scan.allocatedBytes > usable) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `the seed needs about ${mib(scan.allocatedBytes)} MiB on disk, more than the ${gib} GiB workspace disk holds (${mib(usable)} MiB usable); pass a larger disk size (--disk-gib ${Math.max(gib + 1, needGib)})`,
      { needed_bytes: scan.allocatedBytes, usable_bytes: usable },
    );
  }
  if (entries + 16 > inodes) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `the seed has ${entries} files and directories, more than a ${gib} GiB workspace disk has inodes for (${inodes}); pass a larger disk size (--disk-gib)`,
      { entries, inodes },
    );
  }
}

function mib(bytes: number): number {
  return Math.ceil(bytes / 2 ** 20);
}

/**
 * A private copy of the entries the scan kept, for mkfs to read when the root itself cannot be
 * used as is (a path list, or entries to leave out). Files are cloned where the filesystem can,
 * copied otherwise; hardlinked files stay hardlinked; times and modes are kept.
 */
/**
 * Copies the scanned entries into `dir`. Every file is read through a descriptor opened with
 * O_NOFOLLOW whose /proc/self/fd path must be exactly root/path: a parent directory swapped for a
 * symlink after the scan (O_NOFOLLOW guards only the last component) cannot make pyro read, and
 * put into a workspace, a file from outside the seed. Such a change fails the create: the image
 * must hold what the scan (diff's baseline) says.
 */
export async function stageSeed(source: SeedSource, scan: SeedScan, dir: string): Promise<void> {
  const root = await realpath(source.root);
  const linked = new Map<string, string>();
  const dirs: { path: string; st: Stats }[] = [];
  for (const entry of seedEntries(scan)) {
    const from = join(root, entry.path);
    const to = join(dir, entry.path);
    if (entry.type === "d") {
      await mkdir(to, { mode: 0o700 });
      dirs.push({ path: to, st: await lstat(from).catch(() => Promise.reject(changedWhileCopied(entry.path))) });
    } else if (entry.type === "l") {
      const st = await lstat(from).catch(() => Promise.reject(changedWhileCopied(entry.path)));
      await symlink(entry.target, to);
      await lutimes(to, st.atime, st.mtime).catch(() => undefined);
    } else {
      const handle = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => {
        throw changedWhileCopied(entry.path);
      });
      try {
        const st = await handle.stat();
        if (!st.isFile() || (await readlink(`/proc/self/fd/${handle.fd}`).catch(() => "")) !== from) throw changedWhileCopied(entry.path);
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? linked.get(key) : undefined;
        if (first) {
          await link(first, to);
          continue;
        }
        await pipeline(handle.createReadStream({ autoClose: false, start: 0 }), createWriteStream(to, { flags: "wx", mode: 0o600 }));
        await chmod(to, st.mode & 0o7777);
        await utimes(to, st.atime, st.mtime);
        if (st.nlink > 1) linked.set(key, to);
      } finally {
        await handle.close();
      }
    }
  }
  // Directories last, deepest first: adding their entries changed their times.
  for (const { path, st } of dirs.reverse()) {
    await chmod(path, st.mode & 0o7777);
    await utimes(path, st.atime, st.mtime);
  }
}

function changedWhileCopied(path: string): PyroError {
  return new PyroError("INVALID_ARGUMENT", `seed file ${path} changed while it was copied (it, or a directory above it, was replaced); retry the create`);
}

export interface SeedImage {
  /** The ext4 image (read-only from now on). */
  path: string;
  /** The baseline manifest (what the image holds), for diff. */
  manifestPath: string;
  /** Host time (ns) when mkfs finished: everything in the image has a ctime at or before it. */
  builtAtNs: bigint;
}

/**
 * Builds the seed image `image` (sparse, `gib` GiB) from a scanned source, or an empty filesystem
 * without one. `scratchParent` holds the staging tree when one is needed; it must be pyro's own.
 */
export async function buildSeedImage(
  source: SeedSource | undefined,
  scan: SeedScan | undefined,
  gib: number,
  image: string,
  manifestPath: string,
  scratchParent: string,
): Promise<SeedImage> {
  const scratch = await makePrivateTempDir(scratchParent, ".seed-");
  try {
    let tree: string | undefined;
    if (source && scan) {
      tree = source.root;
      if (scan.needsStaging) {
        tree = join(scratch, "tree");
        await mkdir(tree, { mode: 0o700 });
        await stageSeed(source, scan, tree);
      }
    }
    const out = join(scratch, "out");
    await mkdir(out, { mode: 0o700 });
    const size = diskBytes(gib);
    // Lazy inode tables and journal: mkfs writes (and the host stores) only what the files need;
    // the guest mounts with noinit_itable so it never zeroes them either.
    const args = [
      "-q",
      "-F",
      "-t",
      "ext4",
      "-m",
      "0",
      "-L",
      "workspace",
      "-E",
      "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
      ...(tree ? ["-d", tree] : []),
      `${SANDBOX_OUTPUT_DIR}/seed.ext4`,
      `${size / 1024}k`,
    ];
    const result = await runSandboxed({
      tool: requireExecutable("mkfs.ext4", "e2fsprogs"),
      args,
      ...(tree ? { readOnlyDirs: [tree] } : {}),
      asNamespaceRoot: true,
      outputDir: out,
      timeoutMs: MKFS_TIMEOUT_MS,
      limits: { ...MKFS_LIMITS, fileSizeBytes: size },
    });
    if (result.exitCode !== 0 || result.signal) {
      if (/No space left|Could not allocate block|inode/i.test(result.stderr)) {
        throw new PyroError("INVALID_ARGUMENT", `the seed does not fit a ${gib} GiB workspace disk; pass a larger disk size (--disk-gib)`, {
          stderr: result.stderr.slice(-1000),
        });
      }
      throw sandboxFailure(result, "building the workspace disk from the seed");
    }
    const builtAtNs = BigInt(Date.now()) * 1_000_000n;
    // mkfs makes lost+found; a workspace should hold the seed and nothing else.
    if (!scan?.hasLostFound) await removeLostFound(join(out, "seed.ext4"), out);
    const built = join(out, "seed.ext4");
    const st = await lstat(built);
    if (!st.isFile()) throw new PyroError("HOST_COMMAND_FAILED", "mkfs did not leave a plain image file");
    await chmod(built, 0o400);
    await rename(built, image);
    await writeFile(manifestPath, scan?.manifest.bytes() ?? Buffer.alloc(0), { mode: 0o400 });
    return { path: image, manifestPath, builtAtNs };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function removeLostFound(image: string, out: string): Promise<void> {
  const result = await runSandboxed({
    tool: requireExecutable("debugfs", "e2fsprogs"),
    args: ["-w", "-R", "rmdir lost+found", `${SANDBOX_OUTPUT_DIR}/seed.ext4`],
    outputDir: out,
    timeoutMs: 60_000,
    limits: { ...MKFS_LIMITS, fileSizeBytes: (await lstat(image)).size },
  });
  if (result.exitCode !== 0 || result.signal) throw sandboxFailure(result, "removing lost+found from the workspace disk");
}
