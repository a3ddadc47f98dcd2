/**
 * A workspace seed as files: a host root and the relative paths under it that go into
 * /workspace. Where the list comes from (a Git checkout, a plain directory) is project-seed.ts's
 * business; turning it into what the guest receives is packSeedFiles here. A file that is
 * unreadable, special (socket, FIFO, device), vanished, or reached through a symlink is skipped
 * and reported, never a reason to fail the create.
 */
import { constants, type Stats } from "node:fs";
import { lstat, open, readdir, readlink, realpath } from "node:fs/promises";
import { join } from "node:path";
import { Header, Pack, ReadEntry } from "tar";
import { PyroError } from "../errors.js";
import { MAX_ARCHIVE_BYTES, validateTar, type ArchiveSummary } from "./archive-safety.js";
import { unsafeRelativePath, type SkippedSeedFile } from "./git-input.js";
import type { SeedOriginKind } from "./workspace-record.js";

export type { SkippedSeedFile } from "./git-input.js";
export type { SeedOriginKind } from "./workspace-record.js";

/** Where a seed came from, as results report it (`workspace_seed.origin_kind` / `origin_ref`). */
export interface SeedOrigin {
  kind: SeedOriginKind;
  /** The seed_path, the checkout root or the repository URL (with "#ref" when one was asked for). */
  ref: string | null;
  /** The checked-out commit, for Git origins that have one. */
  commit: string | null;
}

/** The seed as files: `paths` (files, symlinks and directories) relative to `root`. */
export interface SeedFileSet {
  root: string;
  paths: string[];
  origin: SeedOrigin;
  /** Names the listing already refused (bad names from git). */
  skipped: SkippedSeedFile[];
}

/** A directory seed lists at most this many entries (files, directories, links). */
export const MAX_SEED_ENTRIES = 2_000_000;

/**
 * Every entry under `root`, relative to it: a seed_path directory's list. Walked by hand because
 * readdir's own `recursive` descends into symlinked directories (a link to / would list the host).
 * A directory that cannot be read is listed itself, its contents skipped and reported.
 */
export async function listDirectoryTree(root: string): Promise<{ paths: string[]; skipped: SkippedSeedFile[] }> {
  const paths: string[] = [];
  const skipped: SkippedSeedFile[] = [];
  const walk = async (relative: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(relative ? join(root, relative) : root, { withFileTypes: true });
    } catch (error) {
      if (!relative) throw error;
      skipped.push({ path: relative, reason: `contents ${reasonFor(error)}` });
      return;
    }
    for (const entry of entries) {
      const path = relative ? `${relative}/${entry.name}` : entry.name;
      paths.push(path);
      if (paths.length > MAX_SEED_ENTRIES) throw new PyroError("INVALID_ARGUMENT", `${root} holds more than ${MAX_SEED_ENTRIES} entries; seed a smaller directory`);
      // The entry's own type: a symlink to a directory is a link here, never walked into.
      if (entry.isDirectory()) await walk(path);
    }
  };
  await walk("");
  return { paths: paths.sort(), skipped };
}

interface PackedSeed {
  tar: Buffer;
  summary: ArchiveSummary;
  skipped: SkippedSeedFile[];
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

function reasonFor(error: unknown): string {
  switch (errnoCode(error)) {
    case "ENOENT":
    case "ENOTDIR":
      return "vanished before it could be read";
    case "EACCES":
    case "EPERM":
      return "unreadable (permission denied)";
    case "ELOOP":
      return "became a symlink while being read";
    default:
      return `unreadable (${errnoCode(error) ?? (error as Error).message})`;
  }
}

/**
 * Packs a seed file set into a tar for the guest. Every path is resolved under the root by pyro
 * itself: each directory on the way must be a real directory (never a symlink), a file is opened
 * with O_NOFOLLOW, must still be the file lstat saw, and must sit at root/path once open (a parent
 * swapped for a link between the checks and the open is caught there). Symlinks are copied as
 * links (they resolve inside the guest). At most MAX_SEED_ENTRIES entries and MAX_ARCHIVE_BYTES
 * of file content.
 */
export async function packSeedFiles(set: SeedFileSet): Promise<PackedSeed> {
  const unique = [...new Set(set.paths)];
  // Every entry costs a 512-byte header in memory, content or not: millions of empty files from a
  // hostile checkout or clone would exhaust the host before the content bound ever trips.
  if (unique.length > MAX_SEED_ENTRIES) throw new PyroError("INVALID_ARGUMENT", `${set.root} lists more than ${MAX_SEED_ENTRIES} entries; seed a smaller directory`);
  // The canonical root: what /proc/self/fd says an opened file's path is gets compared against it.
  const root = await realpath(set.root);
  const skipped: SkippedSeedFile[] = [...set.skipped];
  const pack = new Pack({ portable: true });
  const chunks: Buffer[] = [];
  pack.on("data", (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    pack.on("end", () => resolve());
    pack.on("error", reject);
  });
  let entries = 0;
  const add = (path: string, type: "File" | "Directory" | "SymbolicLink", st: Stats, body?: Buffer, linkpath?: string) => {
    const header = new Header({ path: type === "Directory" ? `${path}/` : path, type, mode: st.mode & 0o777, size: body?.length ?? 0, mtime: st.mtime, ...(linkpath !== undefined ? { linkpath } : {}) });
    entries++;
    const entry = new ReadEntry(header);
    pack.add(entry);
    if (body) entry.write(body);
    entry.end();
  };
  /** Directories already emitted (or refused: mapped to why). */
  const directories = new Map<string, string | null>();
  let bytes = 0;

  /** Emits the parents of `path` as directories; returns why not, if one is not a real directory. */
  const addParents = async (path: string): Promise<string | undefined> => {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!directories.has(dir)) {
        let st: Stats | undefined;
        try {
          st = await lstat(join(root, dir));
        } catch (error) {
          directories.set(dir, reasonFor(error));
        }
        if (st && !st.isDirectory()) directories.set(dir, st.isSymbolicLink() ? `'${dir}' is a symlink: not followed` : `'${dir}' is not a directory`);
        else if (st) {
          directories.set(dir, null);
          add(dir, "Directory", st);
        }
      }
      const why = directories.get(dir);
      if (why) return why;
    }
    return undefined;
  };

  for (const path of unique.sort()) {
    const parentProblem = unsafeRelativePath(path) ?? (await addParents(path));
    if (parentProblem) {
      skipped.push({ path, reason: parentProblem });
      continue;
    }
    const hostPath = join(root, path);
    let st: Stats;
    try {
      st = await lstat(hostPath);
    } catch (error) {
      skipped.push({ path, reason: reasonFor(error) });
      continue;
    }
    try {
      if (st.isDirectory()) {
        if (!directories.has(path)) {
          directories.set(path, null);
          add(path, "Directory", st);
        }
      } else if (st.isSymbolicLink()) {
        add(path, "SymbolicLink", st, undefined, await readlink(hostPath));
      } else if (st.isFile()) {
        const handle = await open(hostPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
        try {
          const now = await handle.stat();
          if (!now.isFile() || now.ino !== st.ino || now.dev !== st.dev) {
            skipped.push({ path, reason: "changed while being read" });
            continue;
          }
          // O_NOFOLLOW guards the last component only; a parent directory replaced by a symlink
          // after addParents looked would be followed. Where the kernel says the open file is decides.
          const opened = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
          if (opened !== hostPath) {
            skipped.push({ path, reason: opened === undefined ? "unreadable (cannot confirm where it was opened: /proc/self/fd)" : "a parent directory became a symlink while being read: not followed" });
            continue;
          }
          if (bytes + now.size > MAX_ARCHIVE_BYTES) {
            throw new PyroError("INVALID_ARGUMENT", `the seed holds more than ${MAX_ARCHIVE_BYTES} bytes of files (at ${path}); seed a smaller directory`);
          }
          const body = await handle.readFile();
          bytes += body.length;
          add(path, "File", now, body);
        } finally {
          await handle.close();
        }
      } else {
        skipped.push({ path, reason: "special file (socket, FIFO or device)" });
      }
    } catch (error) {
      if (error instanceof PyroError) throw error;
      skipped.push({ path, reason: reasonFor(error) });
    }
  }
  pack.end();
  await done;
  const tar = Buffer.concat(chunks);
  // Nothing to pack (a fresh `git init`, an empty directory, every file skipped): an empty seed
  // with its skipped list, not a create that fails on a zero-byte "archive".
  // (Empty tar, as lifecycle skips extracting it: node-tar's parser refuses an entry-less archive.)
  if (entries === 0) return { tar: Buffer.alloc(0), summary: { files: 0, directories: 0, symlinks: 0, bytes: 0 }, skipped };
  // Our own pack of the user's files: symlinks may point anywhere (they resolve inside the guest).
  return { tar, summary: await validateTar(tar, false), skipped };
}
