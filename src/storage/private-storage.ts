/**
 * pyro's own directories (cache, state, runtime, per-VM run dirs) are private to the user running
 * it: another local user who could create, swap or write into one could serve a fake guest agent,
 * read secrets and guest memory, or forge results. Every directory pyro keeps its files in is made
 * here; every file in them is created owner-only (0600, or read-only images).
 */
import { lstat, mkdir, mkdtemp, chmod } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";

/** rwx for the owner only. */
export const PRIVATE_DIR_MODE = 0o700;
/** rw for the owner only. */
export const PRIVATE_FILE_MODE = 0o600;
/** What a child process that writes into pyro's directories runs with (QEMU's sockets, logs, state files). */
const PRIVATE_UMASK = 0o077;

function currentUid(): number {
  return process.getuid?.() ?? 0;
}

function unsafe(path: string, why: string): PyroError {
  return new PyroError(
    "UNSAFE_DIRECTORY",
    `refusing to use ${path}: ${why}; another local user could control it. Remove it (rm -rf ${path}) or point PYRO_HOME / PYRO_RUNTIME_DIR at a directory only you can write`,
    { path },
  );
}

/**
 * Checks that `path` is a real directory (not a symlink) owned by this user and writable by no one
 * else; a directory of ours that others can merely read is tightened to 0700.
 */
export async function assertPrivateDir(path: string): Promise<void> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) throw unsafe(path, "it is a symbolic link");
  if (!st.isDirectory()) throw unsafe(path, "it is not a directory");
  const uid = currentUid();
  if (st.uid !== uid) throw unsafe(path, `it is owned by uid ${st.uid}, not by you (uid ${uid})`);
  // Writable by others: they may already have planted sockets or files in it.
  if (st.mode & 0o022) throw unsafe(path, `it is writable by other users (mode ${(st.mode & 0o777).toString(8)})`);
  if (st.mode & 0o077) await chmod(path, PRIVATE_DIR_MODE);
}

/**
 * Creates `path` (and missing parents) 0700, or checks an existing one with assertPrivateDir. For
 * pyro's root directories and anything whose name another user could guess and create first.
 */
export async function ensurePrivateDir(path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE }).catch((error: NodeJS.ErrnoException) => {
    // Something that is not a directory is in the way: assertPrivateDir says what.
    if (error.code !== "EEXIST" && error.code !== "ENOTDIR") throw error;
  });
  await assertPrivateDir(path);
  return path;
}

/**
 * Creates a subdirectory of a directory already checked private (0700 for everything it creates).
 * No ownership check: inside a private root only this user can have put anything there.
 */
export async function makePrivateSubdir(path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE });
  return path;
}

/** A fresh, uniquely named 0700 directory inside `parent`, which is checked private first. */
export async function makePrivateTempDir(parent: string, prefix: string): Promise<string> {
  await ensurePrivateDir(parent);
  const dir = await mkdtemp(join(parent, prefix));
  await assertPrivateDir(dir);
  return dir;
}

/**
 * Runs `start` (which spawns a process) under umask 077, so every file and socket the child creates
 * is owner-only from the start. The umask is process-wide, so it is restored before returning; a
 * child keeps the one it was forked with.
 */
export function withPrivateUmask<T>(start: () => T): T {
  const previous = process.umask(PRIVATE_UMASK);
  try {
    return start();
  } finally {
    process.umask(previous);
  }
}
