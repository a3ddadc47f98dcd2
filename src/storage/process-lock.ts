import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { currentProcessIdentity, identityAlive, type ProcessIdentity } from "../process/process-identity.js";
import { processAlive } from "../process/process-alive.js";

/**
 * A lock owned by a process, not by a heartbeat: the lock directory holds the owner's pid and start
 * time, so a lock whose owner died (kill -9) is taken over at once instead of after a staleness
 * timeout, and a reused pid does not keep a dead owner's lock alive.
 */
/** What a holder that did not say what it is doing is recorded as doing. */
export const UNNAMED_PURPOSE = "an operation";
const Owner = z.object({ pid: z.number().int(), start: z.string().nullable(), acquired_at: z.string(), purpose: z.string().default(UNNAMED_PURPOSE) });
/** Who held a lock: a live holder, or a dead one whose lock was taken over (so its work was cut short). */
export type LockOwner = z.infer<typeof Owner>;

const OWNER_FILE = "owner.json";
const POLL_MS = 25;

/** Names of the scratch directories acquisition and breaking use next to a lock: `<lock>.acquiring-<pid>-<rand>`. */
const SCRATCH = /\.(acquiring|stale)-(\d+)-[0-9a-f]+$/;

export interface HeldLock {
  release: () => Promise<void>;
  /** The dead holder this lock was taken over from: its operation was interrupted. */
  interrupted?: LockOwner;
}

async function readOwner(lockPath: string): Promise<LockOwner | undefined> {
  try {
    return Owner.parse(JSON.parse(await readFile(join(lockPath, OWNER_FILE), "utf8")));
  } catch {
    // Missing or torn: acquisition renames a complete directory into place, so no live owner left it so.
    return undefined;
  }
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
  let interrupted: LockOwner | undefined;
  const scratch = `${lockPath}.acquiring-${me.pid}-${randomBytes(4).toString("hex")}`;
  await mkdir(scratch, { recursive: true, mode: 0o700 });
  try {
    await writeFile(join(scratch, OWNER_FILE), JSON.stringify({ ...me, acquired_at: new Date().toISOString(), purpose }), { mode: 0o600 });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await rename(scratch, lockPath);
        return { release: () => releaseLock(lockPath, me), ...(interrupted ? { interrupted } : {}) };
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "EISDIR") throw error;
      }
      const owner = await readOwner(lockPath);
      if (owner && identityAlive(owner)) return undefined;
      if (await breakLock(lockPath)) interrupted = owner ?? { pid: 0, start: null, acquired_at: "", purpose: UNNAMED_PURPOSE };
    }
    return undefined;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Moves a dead owner's lock aside (one rename, so two breakers cannot both remove a fresh lock) and deletes it. */
async function breakLock(lockPath: string): Promise<boolean> {
  const aside = `${lockPath}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await rename(lockPath, aside);
  } catch {
    return false; // someone else broke it first
  }
  // Between our check and the rename another process may have broken it and taken it anew: put a live one back.
  if (await lockHolder(aside)) {
    await rename(aside, lockPath).catch(() => undefined);
    return false;
  }
  await rm(aside, { recursive: true, force: true });
  return true;
}

async function releaseLock(lockPath: string, me: ProcessIdentity): Promise<void> {
  // Only our own lock: never one another process took over (it could only do so if we had died).
  const owner = await readOwner(lockPath);
  if (owner && owner.pid === me.pid && owner.start === me.start) await rm(lockPath, { recursive: true, force: true });
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
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const match = SCRATCH.exec(name);
    if (!match || processAlive(Number(match[2]))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

