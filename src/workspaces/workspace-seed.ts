/**
 * What a new workspace's /workspace starts with: the seed_path the caller gave (a directory or an
 * archive), else the server's project (project-seed.ts), else nothing. Resolution says where the
 * files are; preparation turns that into a directory the seed image is built from (seed-image.ts):
 * the user's directory as it is, a project's root with its file list, or an archive unpacked on
 * the host after the hostile-archive checks.
 */
import { lstat, realpath, stat } from "node:fs/promises";
import { PyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { RootedTree } from "../storage/rooted-path.js";
import { extractTarInRoot } from "../storage/rooted-tar-extract.js";
import { SKIPPED_SHOWN, type WorkspaceRecord } from "./workspace-record.js";
import { archiveStream, checkArchivePath, validateTarStream } from "./archive-safety.js";
import { resolveProjectSeed, type ProjectSource } from "./project-seed.js";
import type { SeedFileSet, SeedOrigin, SeedOriginKind, SkippedSeedFile } from "./seed-files.js";
import type { SeedScan, SeedSource } from "./seed-image.js";

export type WorkspaceSeedSource =
  | { kind: "directory"; root: string; origin: SeedOrigin }
  | { kind: "files"; files: SeedFileSet }
  | { kind: "archive"; path: string; origin: SeedOrigin };

/** A seed as a directory the seed image can be built from, and what the results say of it. */
export interface PreparedSeed {
  source: SeedSource;
  mode: "directory" | "tar_archive";
  origin: SeedOrigin;
  /** Entries refused before the scan (bad names from git). */
  skipped: SkippedSeedFile[];
}

/** Where the seed comes from: seed_path first, then the project; undefined means an empty /workspace. */
export async function resolveWorkspaceSeed(
  paths: PyroPaths,
  options: { seedPath?: string; project?: ProjectSource },
): Promise<WorkspaceSeedSource | undefined> {
  if (options.seedPath !== undefined) {
    const origin: SeedOrigin = { kind: "seed_path", ref: options.seedPath, commit: null };
    if (!(await lstat(options.seedPath).catch(() => undefined))) throw new PyroError("INVALID_ARGUMENT", `seed path ${options.seedPath} does not exist`);
    if ((await stat(options.seedPath)).isDirectory()) return { kind: "directory", root: await realpath(options.seedPath), origin };
    return { kind: "archive", path: options.seedPath, origin };
  }
  if (options.project) return { kind: "files", files: await resolveProjectSeed(paths, options.project) };
  return undefined;
}

/**
 * Makes a resolved seed a directory to build from. An archive is validated (no escapes, no
 * devices) before anything is written, then unpacked beneath `scratch()` by pyro's rooted extractor.
 */
export async function prepareWorkspaceSeed(seed: WorkspaceSeedSource, scratch: () => Promise<string>): Promise<PreparedSeed> {
  switch (seed.kind) {
    case "directory":
      return { source: { root: seed.root }, mode: "directory", origin: seed.origin, skipped: [] };
    case "files":
      return { source: { root: seed.files.root, paths: seed.files.paths }, mode: "directory", origin: seed.files.origin, skipped: seed.files.skipped };
    case "archive": {
      // Two streamed passes, never the archive whole in memory: every entry is checked before
      // anything is written, then pyro's rooted extractor unpacks it (and holds its own line, should
      // the file change in between).
      await checkArchivePath(seed.path);
      await validateTarStream(await archiveStream(seed.path), true);
      const root = await scratch();
      await extractTarInRoot(new RootedTree(root), await archiveStream(seed.path), { label: seed.path });
      return { source: { root }, mode: "tar_archive", origin: seed.origin, skipped: [] };
    }
  }
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

const EMPTY_SEED_NOTE =
  "/workspace starts empty: no seed_path was given and there is no project (start `pyro mcp serve` in a Git checkout, or give it --project-path or --repo-url)";

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

export function seedRecord(seed: PreparedSeed | undefined, scan: SeedScan | undefined): WorkspaceRecord["seed"] {
  if (!seed || !scan)
    return { mode: "empty", origin: null, origin_kind: "empty", commit: null, files: 0, bytes: 0, skipped: [], skipped_count: 0, built_at_ns: null };
  const skipped = [...seed.skipped, ...scan.skipped];
  return {
    mode: seed.mode,
    origin: seed.origin.ref,
    origin_kind: seed.origin.kind,
    commit: seed.origin.commit,
    files: scan.files,
    bytes: scan.bytes,
    skipped: skipped.slice(0, SKIPPED_SHOWN),
    skipped_count: skipped.length,
    built_at_ns: null,
  };
}
