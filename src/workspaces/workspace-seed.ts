/**
 * What a new workspace's /workspace starts with: the seed_path the caller gave (a directory or an
 * archive), else the server's project (project-seed.ts), else nothing. Resolution gives a file set
 * (root + relative paths) or an archive; preparation turns either into the validated tar the guest
 * unpacks.
 */
import { realpath, stat } from "node:fs/promises";
import type { PyroPaths } from "../paths.js";
import { prepareTree, type ArchiveSummary } from "./archive-safety.js";
import { resolveProjectSeed, type ProjectSource } from "./project-seed.js";
import { listDirectoryTree, packSeedFiles, type SeedFileSet, type SeedOrigin, type SkippedSeedFile } from "./seed-files.js";

export type WorkspaceSeedSource = { kind: "files"; files: SeedFileSet } | { kind: "archive"; path: string; origin: SeedOrigin };

/** A seed ready for the guest. */
export interface PreparedSeed {
  tar: Buffer;
  summary: ArchiveSummary;
  mode: "directory" | "tar_archive";
  origin: SeedOrigin;
  skipped: SkippedSeedFile[];
}

/** Where the seed comes from: seed_path first, then the project; undefined means an empty /workspace. */
export async function resolveWorkspaceSeed(paths: PyroPaths, options: { seedPath?: string; project?: ProjectSource }): Promise<WorkspaceSeedSource | undefined> {
  if (options.seedPath !== undefined) {
    const origin: SeedOrigin = { kind: "seed_path", ref: options.seedPath, commit: null };
    const info = await stat(options.seedPath).catch(() => undefined);
    if (info?.isDirectory()) {
      const root = await realpath(options.seedPath);
      return { kind: "files", files: { root, ...(await listDirectoryTree(root)), origin } };
    }
    return { kind: "archive", path: options.seedPath, origin };
  }
  if (options.project) return { kind: "files", files: await resolveProjectSeed(paths, options.project) };
  return undefined;
}

/** Packs and validates a resolved seed (archives go through the hostile-archive checks). */
export async function prepareWorkspaceSeed(source: WorkspaceSeedSource): Promise<PreparedSeed> {
  if (source.kind === "archive") {
    const tree = await prepareTree(source.path);
    return { tar: tree.tar, summary: tree.summary, mode: tree.mode, origin: source.origin, skipped: [] };
  }
  const packed = await packSeedFiles(source.files);
  return { ...packed, mode: "directory", origin: source.files.origin };
}
