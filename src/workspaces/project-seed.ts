/**
 * Project-aware seeds: what `pyro mcp serve` seeds a workspace with when the agent gives no
 * seed_path. The project is the Git checkout the server runs in (or --project-path), whose
 * tracked and untracked-but-not-ignored files go in; or a clean clone of --repo-url at
 * --repo-ref, made on the host and cached under pyro's cache dir.
 *
 * git runs with a scrubbed environment and with the repository's own code-running settings
 * overridden (fsmonitor, hooks), never in a checkout another user owns, never with a remote
 * helper transport, and always with a deadline; a clone is also bounded in size.
 */
import { createHash, randomBytes } from "node:crypto";
import { homedir } from "node:os";
import { lstat, realpath, rename, rm, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommandRaw, type HostCommandResult } from "../process/host-command.js";
import type { PyroPaths } from "../paths.js";
import { ensurePrivateDir } from "../storage/private-storage.js";
import { checkRepoRef, isFullCommitId, parseLsFilesZ, parseRepoUrl, type RepoLocation } from "./git-input.js";
import { listDirectoryTree, type SeedFileSet } from "./seed-files.js";
import { allocatedBytes } from "./workspace-disk-usage.js";

/** Where a server's project comes from (what `workspace_create` without seed_path seeds from). */
export type ProjectSource = { kind: "project_path"; path: string } | { kind: "repo_url"; url: string; ref?: string };

/** Deadline for one git command that only reads a checkout. */
const GIT_READ_TIMEOUT_MS = 60_000;
/** Deadline for a --repo-url clone, and the most it may put on disk (objects and checkout). */
export const REPO_CLONE_TIMEOUT_MS = 300_000;
export const REPO_CLONE_MAX_BYTES = 2 * 1024 * 1024 * 1024;
/** `ls-files -z` output beyond this is not a project pyro seeds in one go. */
const MAX_LISTING_BYTES = 256 * 1024 * 1024;

/**
 * The environment git runs with: no system config, no GIT_* variables inherited from the caller
 * (GIT_DIR and friends would redirect it), no prompts, no pager, no index writes, and only the
 * transports REPO_URL_SCHEMES allows. The user's own global config still applies (their global
 * excludes decide what is ignored, as in their own git).
 */
function gitEnvironment(): NodeJS.ProcessEnv {
  const keep = ["PATH", "HOME", "XDG_CONFIG_HOME", "SSH_AUTH_SOCK", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];
  const env: NodeJS.ProcessEnv = {};
  for (const name of keep) if (process.env[name] !== undefined) env[name] = process.env[name];
  return {
    ...env,
    LC_ALL: "C",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_TERMINAL_PROMPT: "0",
    GIT_PAGER: "cat",
    GIT_OPTIONAL_LOCKS: "0",
    GIT_ALLOW_PROTOCOL: "https:http:ssh:git:file",
    GIT_NO_REPLACE_OBJECTS: "1",
  };
}

/** Settings a repository's own config could use to run code, pinned off for every git command. */
const SAFE_CONFIG = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "protocol.ext.allow=never", "-c", "core.untrackedCache=false"];

async function git(args: string[], options: { cwd: string; timeoutMs?: number; signal?: AbortSignal; maxOutputBytes?: number }): Promise<HostCommandResult> {
  return runHostCommandRaw(requireExecutable("git", "git"), [...SAFE_CONFIG, ...args], {
    cwd: options.cwd,
    env: { ...gitEnvironment(), GIT_CEILING_DIRECTORIES: dirname(options.cwd) },
    timeoutMs: options.timeoutMs ?? GIT_READ_TIMEOUT_MS,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.maxOutputBytes ? { maxOutputBytes: options.maxOutputBytes } : {}),
  });
}

function lastLine(stderr: string): string {
  return stderr.trim().split("\n").filter(Boolean).pop() ?? "no message";
}

/**
 * The root of the Git checkout holding `dir` (its nearest ancestor with a .git), found without
 * running git; undefined when there is none. A checkout owned by another user is refused: its
 * config is theirs to fill with commands.
 */
export async function findCheckout(dir: string): Promise<string | undefined> {
  let current = await realpath(dir);
  const uid = process.getuid?.();
  for (;;) {
    const marker = await lstat(join(current, ".git")).catch(() => undefined);
    if (marker) {
      const owner = (await lstat(current)).uid;
      if (uid !== undefined && (owner !== uid || marker.uid !== uid)) {
        throw new PyroError(
          "UNSAFE_DIRECTORY",
          `the Git checkout at ${current} belongs to another user (uid ${owner === uid ? marker.uid : owner}); pyro does not run git there. Pass seed_path, or --project-path to a checkout of your own`,
        );
      }
      return current;
    }
    const parent = dirname(current);
    if (parent === current) return undefined;
    current = parent;
  }
}

/** The commit HEAD names, or null (a checkout without commits). */
async function headCommit(root: string): Promise<string | null> {
  const r = await git(["rev-parse", "--verify", "--quiet", "HEAD"], { cwd: root });
  const id = r.stdout.toString("utf8").trim();
  return r.exitCode === 0 && /^[0-9a-f]{40,64}$/.test(id) ? id : null;
}

/** Tracked files plus untracked files that are not ignored, relative to the checkout root. */
async function checkoutFiles(root: string): Promise<{ paths: string[]; skipped: SeedFileSet["skipped"] }> {
  // The runner keeps a stream's tail: with room for twice the limit, output that was cut is still over it.
  // --work-tree pins the walk to the checkout: the repository's own core.worktree could otherwise
  // point it anywhere on the host (the names would come back in the seed's skipped list).
  const r = await git(["--work-tree", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    cwd: root,
    maxOutputBytes: 2 * MAX_LISTING_BYTES,
  });
  if (r.exitCode !== 0) throw new PyroError("HOST_COMMAND_FAILED", `git ls-files failed in ${root}: ${lastLine(r.stderr)}`);
  if (r.stdout.length > MAX_LISTING_BYTES)
    throw new PyroError("INVALID_ARGUMENT", `${root} lists more than ${MAX_LISTING_BYTES} bytes of file names; pass a smaller seed_path`);
  return parseLsFilesZ(r.stdout);
}

/** A project directory's seed: its checkout's files when it is in one, else everything under it. */
async function projectPathSeed(path: string): Promise<SeedFileSet> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isDirectory()) throw new PyroError("INVALID_ARGUMENT", `project path ${path} is not a directory`);
  const checkout = await findCheckout(path);
  if (!checkout) {
    const root = await realpath(path);
    return { root, ...(await listDirectoryTree(root)), origin: { kind: "project_path", ref: root, commit: null } };
  }
  const { paths, skipped } = await checkoutFiles(checkout);
  return { root: checkout, paths, origin: { kind: "project_path", ref: checkout, commit: await headCommit(checkout) }, skipped };
}

/** Clones made by this process, by cache key: one clone per (URL, ref) per server. */
const clones = new Map<string, Promise<string>>();

/**
 * Clones `location` at `ref` (default branch when absent) into the cache, bounded in time and
 * size. The clone is built beside its final place and renamed in, so a crash leaves no half clone.
 */
async function cloneRepo(paths: PyroPaths, location: RepoLocation, ref: string | undefined): Promise<string> {
  const source = location.kind === "url" ? location.url : location.path;
  const key = createHash("sha256")
    .update(`${source}\0${ref ?? ""}`)
    .digest("hex")
    .slice(0, 24);
  const reposDir = join(paths.cacheDir, "repos");
  const final = join(reposDir, key);
  // Private and really ours (no symlink, no other owner): a planted repos dir would receive the
  // clone elsewhere, or hand a later server a poisoned "immutable" commit clone.
  await ensurePrivateDir(paths.cacheDir);
  await ensurePrivateDir(reposDir);
  // A full commit id names the same tree forever: a clone of it from an earlier server is reused.
  if (ref && isFullCommitId(ref) && (await lstat(join(final, ".git")).catch(() => undefined))) return final;
  const scratch = join(reposDir, `.clone-${randomBytes(6).toString("hex")}`);
  const abort = new AbortController();
  let oversize = false;
  const watch = setInterval(() => {
    void allocatedBytes(scratch)
      .then((used) => {
        if (used > REPO_CLONE_MAX_BYTES) {
          oversize = true;
          abort.abort();
        }
      })
      .catch(() => undefined);
  }, 500);
  const run = (args: string[], cwd: string) => git(args, { cwd, timeoutMs: REPO_CLONE_TIMEOUT_MS, signal: abort.signal });
  const refuse = (r: HostCommandResult) =>
    new PyroError(
      "INVALID_ARGUMENT",
      `cannot clone --repo-url ${source}${ref ? ` at --repo-ref ${ref}` : ""}: ${lastLine(r.stderr)} (it must be a Git repository you can read)`,
    );
  try {
    const shallow = ["clone", "--quiet", "--no-tags", "--single-branch", "--depth", "1", ...(ref ? ["--branch", ref] : []), "--", source, scratch];
    let r = await run(shallow, reposDir);
    if (r.exitCode !== 0 && ref && /^[0-9a-f]{7,64}$/.test(ref)) {
      // A commit id is no branch: clone everything, then check the commit out.
      await rm(scratch, { recursive: true, force: true });
      r = await run(["clone", "--quiet", "--no-checkout", "--", source, scratch], reposDir);
      if (r.exitCode === 0) r = await run(["checkout", "--quiet", "--detach", ref, "--"], scratch);
    }
    if (r.exitCode !== 0) throw refuse(r);
    await rm(final, { recursive: true, force: true });
    await rename(scratch, final);
    return final;
  } catch (error) {
    if (oversize)
      throw new PyroError("INVALID_ARGUMENT", `--repo-url ${source} is larger than ${REPO_CLONE_MAX_BYTES} bytes on disk; seed a smaller repository`);
    if (error instanceof PyroError && error.code === "HOST_COMMAND_FAILED") {
      throw new PyroError("INVALID_ARGUMENT", `cloning --repo-url ${source} did not finish: ${error.message}`);
    }
    throw error;
  } finally {
    clearInterval(watch);
    await rm(scratch, { recursive: true, force: true });
  }
}

/** A --repo-url project's seed: the clean clone's tracked files. */
async function repoUrlSeed(paths: PyroPaths, url: string, ref: string | undefined): Promise<SeedFileSet> {
  const location = parseRepoUrl(url);
  if (ref !== undefined) checkRepoRef(ref);
  const key = `${url}\0${ref ?? ""}`;
  let clone = clones.get(key);
  if (!clone) {
    clone = cloneRepo(paths, location, ref);
    clones.set(key, clone);
    clone.catch(() => clones.delete(key)); // a failed clone is retried by the next create
  }
  const root = await clone;
  const { paths: files, skipped } = await checkoutFiles(root);
  return { root, paths: files, origin: { kind: "repo_url", ref: ref ? `${url}#${ref}` : url, commit: await headCommit(root) }, skipped };
}

/** Resolves a project source to the files its workspaces are seeded with (afresh for each create). */
export async function resolveProjectSeed(paths: PyroPaths, source: ProjectSource): Promise<SeedFileSet> {
  return source.kind === "project_path" ? projectPathSeed(source.path) : repoUrlSeed(paths, source.url, source.ref);
}

/**
 * What a server started in `cwd` with these flags seeds from: --repo-url, else --project-path,
 * else the Git checkout holding cwd, else nothing (workspaces start empty). Checks what can be
 * checked without cloning, so a bad flag fails at start-up.
 */
export async function detectProjectSource(options: {
  cwd: string;
  projectPath?: string;
  repoUrl?: string;
  repoRef?: string;
}): Promise<ProjectSource | undefined> {
  if (options.repoRef !== undefined && options.repoUrl === undefined) throw new PyroError("INVALID_ARGUMENT", "--repo-ref needs --repo-url");
  if (options.repoUrl !== undefined) {
    if (options.projectPath !== undefined) throw new PyroError("INVALID_ARGUMENT", "give --project-path or --repo-url, not both");
    const location = parseRepoUrl(options.repoUrl, options.cwd);
    if (options.repoRef !== undefined) checkRepoRef(options.repoRef);
    const url = location.kind === "url" ? location.url : location.path;
    return { kind: "repo_url", url, ...(options.repoRef !== undefined ? { ref: options.repoRef } : {}) };
  }
  if (options.projectPath !== undefined) {
    const path = resolve(options.cwd, options.projectPath);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isDirectory()) throw new PyroError("INVALID_ARGUMENT", `--project-path ${options.projectPath} is not a directory`);
    return { kind: "project_path", path: await realpath(path) };
  }
  const checkout = await findCheckout(options.cwd).catch((error: unknown) => {
    // Started inside someone else's checkout: serve without a project rather than not at all.
    if (error instanceof PyroError && error.code === "UNSAFE_DIRECTORY") return undefined;
    throw error;
  });
  // A checkout at / or at the home directory (a dotfiles repo) is no project: its untracked files
  // are everything the user owns. Only an explicit --project-path seeds from there.
  if (!checkout || checkout === "/" || checkout === (await realpath(homedir()).catch(() => homedir()))) return undefined;
  return { kind: "project_path", path: checkout };
}

/** One line saying what a server seeds from, for its start-up message. */
export function describeProjectSource(source: ProjectSource | undefined): string {
  if (!source) return "workspace_create without seed_path starts empty (not started in a Git checkout; --project-path or --repo-url give it a project)";
  return source.kind === "project_path"
    ? `workspace_create without seed_path seeds from ${source.path}`
    : `workspace_create without seed_path seeds from a clone of ${source.url}${source.ref ? ` at ${source.ref}` : ""}`;
}
