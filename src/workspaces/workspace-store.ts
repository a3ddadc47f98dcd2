import { randomBytes } from "node:crypto";
import { readdir, readFile, rename, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import { memoizeUntilFailure } from "../memoize.js";
import type { PyroPaths } from "../paths.js";
import { readJsonIfValid, writeFileAtomic, writeJsonAtomic } from "../storage/atomic-file.js";
import { acquireLock, type HeldLock, lockHolder, tryAcquireLock, type LockOwner } from "../storage/process-lock.js";
import { ensurePrivateDir, makePrivateSubdir } from "../storage/private-storage.js";
import { WorkspaceRecord } from "./workspace-record.js";

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
/** What newWorkspaceId makes: anything else given as an id is a name, never part of a path. */
export const WORKSPACE_ID = /^ws-[a-z2-7]+$/;
/** How long an operation waits for another pyro process to finish with the same workspace. */
const LOCK_WAIT_MS = 300_000;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** 100 random bits, base32: unguessable, typeable. */
export function newWorkspaceId(): string {
  const bytes = randomBytes(20);
  return "ws-" + [...bytes].map((b) => ID_ALPHABET[b & 31]).join("");
}

export function validateName(name: string): string {
  if (!NAME_PATTERN.test(name) || name.startsWith("ws-")) {
    throw new PyroError("INVALID_ARGUMENT", `invalid workspace name '${name}': use 1-63 letters, digits, '.', '_' or '-', not starting with 'ws-'`);
  }
  return name;
}

/** Names being given to workspaces whose records do not carry them yet (see claimName). */
const NAME_CLAIMS_DIR = ".names";

export interface NameClaim {
  release(): Promise<void>;
}

/** Workspace records and files under <state>/workspaces/<id>/. */
export class WorkspaceStore {
  constructor(private readonly paths: PyroPaths) {}

  get rootDir(): string {
    return join(this.paths.stateDir, "workspaces");
  }

  dir(id: string): string {
    return join(this.rootDir, id);
  }

  recordPath(id: string): string {
    return join(this.dir(id), "workspace.json");
  }

  /** Where a workspace VM's sockets live (short path: unix socket limit). */
  runDir(id: string): string {
    return join(this.paths.runtimeDir, id);
  }

  async read(id: string): Promise<WorkspaceRecord | undefined> {
    return readJsonIfValid(this.recordPath(id), WorkspaceRecord);
  }

  async write(record: WorkspaceRecord): Promise<void> {
    await writeJsonAtomic(this.recordPath(record.id), record, 0o600);
  }

  async list(): Promise<WorkspaceRecord[]> {
    const ids = (await readdir(this.rootDir).catch(() => [] as string[])).filter((d) => WORKSPACE_ID.test(d));
    const records = await Promise.all(ids.map((id) => this.read(id)));
    return records.filter((r): r is WorkspaceRecord => r !== undefined);
  }

  /** Finds a workspace by id or name, or fails with how to list them. */
  async resolve(ref: string): Promise<WorkspaceRecord> {
    if (WORKSPACE_ID.test(ref)) {
      const record = await this.read(ref);
      if (record) return record;
    } else {
      const match = (await this.list()).find((r) => r.name === ref);
      if (match) return match;
    }
    throw new PyroError("WORKSPACE_NOT_FOUND", `no workspace '${ref}'; list them with 'pyro workspace list'`, { workspace: ref });
  }

  /**
   * The id `ref` names. An id is not checked against its record, which the operation reads under
   * the lock anyway: the lock's holder is what makes the record current, and a read before it costs
   * every command a parse of it.
   */
  async idOf(ref: string): Promise<string> {
    if (WORKSPACE_ID.test(ref) && existsSync(this.recordPath(ref))) return ref;
    return (await this.resolve(ref)).id;
  }

  /** A fast first check, before any work; only claimName, under the workspace's lock, makes a name its own. */
  async assertNameFree(name: string, exceptId?: string): Promise<void> {
    const taken = (await this.list()).find((r) => r.name === name && r.id !== exceptId);
    if (taken) throw new PyroError("INVALID_ARGUMENT", `the name '${name}' is already used by workspace ${taken.id}`);
  }

  /**
   * Claims `name` for workspace `id` until its record carries it: two pyro processes creating,
   * forking or renaming to one name at once both pass assertNameFree, as neither record is written
   * yet, and only one of them may go on. Call it holding `id`'s lock and release the claim once the
   * record is written (or the operation failed). A claim counts only while its workspace's lock is
   * held by a live process, so one left by a crash frees itself.
   */
  async claimName(name: string | null, id: string): Promise<NameClaim> {
    if (name === null) return { release: async () => undefined };
    await this.ensureRoot();
    await makePrivateSubdir(join(this.rootDir, NAME_CLAIMS_DIR));
    const path = join(this.rootDir, NAME_CLAIMS_DIR, `n-${name}`);
    // Short: two claims of one name must not both see it free, and the check reads every record.
    const held = await acquireLock(join(this.rootDir, `${NAME_CLAIMS_DIR}.lock`), "claim a workspace name", LOCK_WAIT_MS);
    if (!held) throw new PyroError("WORKSPACE_BUSY", "another pyro process is claiming a workspace name; try again when it finishes");
    try {
      await this.assertNameFree(name, id);
      const claimant = (await readFile(path, "utf8").catch(() => undefined))?.trim();
      if (claimant && claimant !== id && WORKSPACE_ID.test(claimant) && (await lockHolder(this.lockPath(claimant)))) {
        throw new PyroError("INVALID_ARGUMENT", `the name '${name}' is being given to workspace ${claimant} by another pyro process; choose another`);
      }
      await writeFileAtomic(path, id);
    } finally {
      await held.release().catch(() => undefined);
    }
    return {
      release: async () => {
        if ((await readFile(path, "utf8").catch(() => undefined)) === id) await rm(path, { force: true });
      },
    };
  }

  async createDir(id: string): Promise<string> {
    const dir = this.dir(id);
    // Secrets and guest memory images go in here.
    await this.ensureRoot();
    await makePrivateSubdir(join(dir, "snapshots"));
    return dir;
  }

  /**
   * The state dir checked private, and the workspaces dir inside it. Checked once per store: every
   * lock passes here, and the check (two mkdirs and an lstat through the thread pool) cost every
   * command ~0.3 ms. What it checks, a private state directory of ours, does not change under a
   * running process: only we can write its parent. (Removed under a running server, it comes back
   * through a lock's mkdir, 0700, without this check.)
   */
  private readonly ensureRoot = memoizeUntilFailure(async () => {
    await ensurePrivateDir(this.paths.stateDir);
    await makePrivateSubdir(this.rootDir);
  });

  /**
   * Removes a workspace's files; the record goes first (by rename) so a crash never leaves half a
   * workspace listed. `whileUnlisted` runs between the two (delete stops the VM there).
   */
  async remove(id: string, whileUnlisted?: () => Promise<void>): Promise<void> {
    const dir = this.dir(id);
    const doomed = join(this.rootDir, `.deleted-${id}-${process.pid}`);
    await rename(dir, doomed).catch(() => undefined);
    await whileUnlisted?.();
    await rm(doomed, { recursive: true, force: true });
    await rm(this.runDir(id), { recursive: true, force: true });
  }

  lockPath(id: string): string {
    return `${this.dir(id)}.lock`;
  }

  /**
   * Runs `fn` holding the workspace's lock, so concurrent pyro processes never interleave on one
   * workspace. A lock whose holder died is taken over at once (owner pid + start time, no timeout).
   */
  async withLock<T>(id: string, purpose: string, fn: (interrupted: LockOwner | undefined) => Promise<T>): Promise<T> {
    await this.ensureRoot();
    const held = await acquireLock(this.lockPath(id), purpose, LOCK_WAIT_MS);
    if (!held) throw new PyroError("WORKSPACE_BUSY", `workspace ${id} is busy in another pyro process; try again when it finishes`, { workspace: id });
    try {
      return await fn(held.interrupted);
    } finally {
      await held.release().catch(() => undefined);
    }
  }

  /**
   * Takes the lock of a workspace nobody else knows yet (a warm workspace's, made ahead of its
   * create) and keeps it until `release`: until then its directory is an unfinished create.
   */
  async holdNewLock(id: string, purpose: string): Promise<HeldLock> {
    await this.ensureRoot();
    const held = await tryAcquireLock(this.lockPath(id), purpose);
    if (!held) throw new PyroError("WORKSPACE_BUSY", `workspace ${id} is busy in another pyro process`, { workspace: id });
    return held;
  }

  /** Like withLock, but returns BUSY at once instead of waiting for a live holder. */
  async tryWithLock<T>(id: string, purpose: string, fn: (interrupted: LockOwner | undefined) => Promise<T>): Promise<T | typeof BUSY> {
    await this.ensureRoot();
    const held = await tryAcquireLock(this.lockPath(id), purpose);
    if (!held) return BUSY;
    try {
      return await fn(held.interrupted);
    } finally {
      await held.release().catch(() => undefined);
    }
  }
}

export const BUSY = Symbol("busy");
