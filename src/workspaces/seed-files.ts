/**
 * A workspace seed as files: a host root and the relative paths under it that go into
 * /workspace. Where the list comes from (a Git checkout, a plain directory) is project-seed.ts's
 * business; the seed image (seed-image.ts) is built from it. A file that is
 * unreadable, special (socket, FIFO, device), vanished, or reached through a symlink is skipped
 * and reported, never a reason to fail the create.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import type { SkippedSeedFile } from "./git-input.js";
import { TREE_MANIFEST_LIMITS } from "./workspace-limits.js";
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

/** A directory seed lists at most this many entries (files, directories, links): as many as diff and export take. */
export const MAX_SEED_ENTRIES = TREE_MANIFEST_LIMITS.entries;

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
      if (paths.length > MAX_SEED_ENTRIES)
        throw new PyroError("INVALID_ARGUMENT", `${root} holds more than ${MAX_SEED_ENTRIES} entries; seed a smaller directory`);
      // The entry's own type: a symlink to a directory is a link here, never walked into.
      if (entry.isDirectory()) await walk(path);
    }
  };
  await walk("");
  return { paths: paths.sort(), skipped };
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
