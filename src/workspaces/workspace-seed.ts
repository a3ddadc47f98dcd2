/**
 * What a new workspace's /workspace starts with: the seed_path the caller gave (a directory or an
 * archive), else the server's project (project-seed.ts), else nothing. Resolution gives a file set
 * (root + relative paths) or an archive; preparation turns either into the validated tar the guest
 * unpacks.
 */
import { realpath, stat } from "node:fs/promises";
import type { PyroPaths } from "../paths.js";
import { SKIPPED_SHOWN, type WorkspaceRecord } from "./workspace-record.js";
import { prepareTree, type ArchiveSummary } from "./archive-safety.js";
import { resolveProjectSeed, type ProjectSource } from "./project-seed.js";
import { listDirectoryTree, packSeedFiles, type SeedFileSet, type SeedOrigin, type SeedOriginKind, type SkippedSeedFile } from "./seed-files.js";

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

/** Where /workspace's first contents came from (the contract's `workspace_seed`). */
export interface WorkspaceSeedView {
  mode: WorkspaceRecord["seed"]["mode"];
  origin_kind: SeedOriginKind;
  origin_ref: string | null;
  commit: string | null;
  files: number;
  bytes: number;
  skipped_count: number;
  skipped: { path: string; reason: string }[];
  /** Said when the workspace starts empty, so an agent that expected its project knows why. */
  note?: string;
}

const EMPTY_SEED_NOTE = "/workspace starts empty: no seed_path was given and there is no project (start `pyro mcp serve` in a Git checkout, or give it --project-path or --repo-url)";

export function seedView(seed: WorkspaceRecord["seed"]): WorkspaceSeedView {
  const kind = seed.origin_kind ?? (seed.mode === "empty" ? "empty" : "seed_path");
  return {
    mode: seed.mode,
    origin_kind: kind,
    origin_ref: seed.origin,
    commit: seed.commit,
    files: seed.files,
    bytes: seed.bytes,
    skipped_count: seed.skipped_count,
    skipped: seed.skipped,
    ...(kind === "empty" ? { note: EMPTY_SEED_NOTE } : {}),
  };
}

export function seedRecord(seed: PreparedSeed | undefined): WorkspaceRecord["seed"] {
  if (!seed) return { mode: "empty", origin: null, origin_kind: "empty", commit: null, files: 0, bytes: 0, skipped: [], skipped_count: 0 };
  return {
    mode: seed.mode,
    origin: seed.origin.ref,
    origin_kind: seed.origin.kind,
    commit: seed.origin.commit,
    files: seed.summary.files,
    bytes: seed.summary.bytes,
    skipped: seed.skipped.slice(0, SKIPPED_SHOWN),
    skipped_count: seed.skipped.length,
  };
}
