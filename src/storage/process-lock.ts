import { randomBytes } from "node:crypto";
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { currentProcessIdentity, identityAlive } from "../process/process-identity.js";
import { processAlive } from "../process/process-alive.js";

/**
 * A lock owned by a process, not by a heartbeat: the lock directory holds the owner's pid and start
 * time, so a lock whose owner died (kill -9) is taken over at once instead of after a staleness
 * timeout, and a reused pid does not keep a dead owner's lock alive.
 *
 * Protocol (rename/rmdir only: Node has no flock):
 * - A lock directory holds `owner.json` and an empty file `holder-<nonce>`, the nonce fresh per
 *   acquisition and recorded in owner.json. Acquiring is one rename of a complete scratch directory
 *   onto the lock path; it succeeds when nothing is there or only an empty directory (rename(2)
 *   replaces an empty directory), and fails while a lock with contents is there.
 * - Breaking a dead owner's lock first claims *that* lock by renaming its `holder-<nonce>` away. The
 *   nonce names one acquisition, so a breaker that read a dead owner and lost the race (the lock was
 *   broken and taken anew meanwhile) finds no such file and touches nothing: a live lock is never
 *   moved. The claimant then removes owner.json, leaving an empty directory that the next acquirer's
 *   rename replaces, and rmdirs it (rmdir cannot remove a lock someone took meanwhile: it is not empty).
 * - A lock without a holder file (written by an older pyro, or torn) is claimed by renaming its
 *   owner.json away and comparing it byte for byte with what was read; on a mismatch it goes back
 *   with link(2), which never overwrites. Such a lock is the only state this path can touch.
 * - Release removes the lock only while its own holder file is in it.
 *
 * The steps are synchronous calls on small local files: every workspace
 * operation takes a lock, and through the thread pool each of its ~10 steps cost a round of thread
 * wake-ups, which a loaded host makes slow. None of them blocks for long.
 */
/** What a holder that did not say what it is doing is recorded as doing. */
export const UNNAMED_PURPOSE = "an operation";
const Owner = z.object({
  pid: z.number().int(),
  start: z.string().nullable(),
  acquired_at: z.string(),
  purpose: z.string().default(UNNAMED_PURPOSE),
  /** The nonce of this acquisition's `holder-<nonce>` file; absent in locks from older versions. */
  holder: z
    .string()
    .regex(/^[0-9a-f]+$/)
    .optional(),
});
/** Who held a lock: a live holder, or a dead one whose lock was taken over (so its work was cut short). */
export type LockOwner = z.infer<typeof Owner>;

const OWNER_FILE = "owner.json";
const holderFile = (nonce: string) => `holder-${nonce}`;
const POLL_MS = 25;

/**
 * Names of the scratch entries acquisition, breaking and release use next to a lock:
 * `<lock>.acquiring-<pid>-<rand>`, `<lock>.stale-<pid>-<rand>`.
 */
const SCRATCH = /\.(acquiring|stale)-(\d+)-[0-9a-f]+$/;

export interface HeldLock {
  release: () => Promise<void>;
  /** The dead holder this lock was taken over from: its operation was interrupted. */
  interrupted?: LockOwner;
}

/** A lock as one reader saw it: the owner record's exact bytes, and the owner if they parse. */
export interface SeenLock {
  raw: string;
  owner: LockOwner | undefined;
}

/** Reads the lock at `lockPath`; undefined when there is no owner record. */
export async function inspectLock(lockPath: string): Promise<SeenLock | undefined> {
  let raw: string;
  try {
    raw = readFileSync(join(lockPath, OWNER_FILE), "utf8");
  } catch {
    return undefined;
  }
  try {
    return { raw, owner: Owner.parse(JSON.parse(raw)) };
  } catch {
    // Torn: acquisition renames a complete directory into place, so no live owner left it so.
    return { raw, owner: undefined };
  }
}

async function readOwner(lockPath: string): Promise<LockOwner | undefined> {
  return (await inspectLock(lockPath))?.owner;
}

/** The holder named in a lock left behind by a process that died holding it; undefined if none or alive. */
export async function deadHolder(lockPath: string): Promise<LockOwner | undefined> {
  const owner = await readOwner(lockPath);
  return owner && !identityAlive(owner) ? owner : undefined;
}

/** Who holds the lock, if a live process does. */
export async function lockHolder(lockPath: string): Promise<LockOwner | undefined> {
  const owner = await readOwner(lockPath);
  return owner && identityAlive(owner) ? owner : undefined;
}

/**
 * Takes the lock if it is free or its owner is dead; undefined if a live process holds it.
 * Acquisition is one rename of a directory that already names its owner, so there is never a lock
 * without an owner to check.
 */
export async function tryAcquireLock(lockPath: string, purpose: string): Promise<HeldLock | undefined> {
  const me = currentProcessIdentity();
  const nonce = randomBytes(8).toString("hex");
  let interrupted: LockOwner | undefined;
  const scratch = `${lockPath}.acquiring-${me.pid}-${randomBytes(4).toString("hex")}`;
  mkdirSync(scratch, { recursive: true, mode: 0o700 });
  try {
    writeFileSync(join(scratch, holderFile(nonce)), "", { mode: 0o600 });
    writeFileSync(join(scratch, OWNER_FILE), JSON.stringify({ ...me, acquired_at: new Date().toISOString(), purpose, holder: nonce }), { mode: 0o600 });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        renameSync(scratch, lockPath);
        return { release: () => releaseLock(lockPath, nonce), ...(interrupted ? { interrupted } : {}) };
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "EISDIR") throw error;
      }
      const seen = await inspectLock(lockPath);
      if (seen?.owner && identityAlive(seen.owner)) return undefined;
      if (seen && (await breakDeadLock(lockPath, seen))) interrupted = seen.owner ?? { pid: 0, start: null, acquired_at: "", purpose: UNNAMED_PURPOSE };
    }
    return undefined;
  } finally {
    // Gone once the rename moved it into place: only a lost race leaves it to remove.
    if (existsSync(scratch)) rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * Breaks the lock `seen` was read from, whose owner is dead, and only that one (see the protocol
 * above); false when it is no longer there (broken by someone else, perhaps taken anew).
 */
export async function breakDeadLock(lockPath: string, seen: SeenLock): Promise<boolean> {
  const aside = `${lockPath}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  if (seen.owner?.holder) {
    try {
      renameSync(join(lockPath, holderFile(seen.owner.holder)), aside);
    } catch {
      return false; // that acquisition's lock is gone
    }
  } else {
    try {
      renameSync(join(lockPath, OWNER_FILE), aside);
    } catch {
      return false;
    }
    if (readIfPresent(aside) !== seen.raw) {
      // Not the lock we read: put its record back without overwriting anything.
      try {
        linkSync(aside, join(lockPath, OWNER_FILE));
      } catch {
        // a record is there again: leave it
      }
      rmSync(aside, { force: true });
      return false;
    }
  }
  rmSync(aside, { force: true });
  // The lock is ours to remove: no other breaker can claim it, and no acquirer replaces it while it
  // still has contents. (A legacy lock is already empty: its owner.json was the claim.)
  if (seen.owner?.holder) rmSync(join(lockPath, OWNER_FILE), { force: true });
  try {
    rmdirSync(lockPath);
  } catch {
    // ENOTEMPTY: someone acquired the emptied lock already
  }
  return true;
}

function readIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

async function releaseLock(lockPath: string, nonce: string): Promise<void> {
  // Only our own lock: never one another process took over (it could only do so if we had died).
  if (!existsSync(join(lockPath, holderFile(nonce)))) return;
  // One rename frees the lock: removed in place, a kill -9 between its unlinks would leave a lock
  // with an owner record and no holder file (or the reverse), which no breaker may claim, so the
  // workspace would stay busy for good. Nothing else can move or replace a live holder's lock.
  // The aside name is breaking scratch: a release cut short leaves what sweepLockScratch removes.
  const aside = `${lockPath}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  renameSync(lockPath, aside);
  // In line: three small unlinks, where the thread pool's round trips cost more.
  rmSync(aside, { recursive: true, force: true });
}

/** Waits (polling) for the lock; undefined when `waitMs` passed with a live process still holding it. */
export async function acquireLock(lockPath: string, purpose: string, waitMs: number): Promise<HeldLock | undefined> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const held = await tryAcquireLock(lockPath, purpose);
    if (held || Date.now() > deadline) return held;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Removes acquisition/breaking scratch directories left in `dir` by processes that died mid-step. */
export async function sweepLockScratch(dir: string): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  for (const name of names) {
    const match = SCRATCH.exec(name);
    if (!match || processAlive(Number(match[2]))) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}
