import { constants } from "node:fs";
import { copyFile, link, lstat, mkdir, mkdtemp, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { PyroError } from "../errors.js";

function alreadyExists(path: string): PyroError {
  return new PyroError("INVALID_ARGUMENT", `${path} already exists; choose another --output (pyro never overwrites host files)`);
}

/** Fails fast, before slow work, when the output is already taken (a symlink counts, even a dangling one). */
export async function assertOutputFree(path: string): Promise<void> {
  if (
    await lstat(path).then(
      () => true,
      () => false,
    )
  )
    throw alreadyExists(path);
}

/**
 * Creates `path` as a new file, never replacing or writing through anything there, however long
 * `fill` takes (a guest decides how long an export's read lasts, and a local user may create the
 * output meanwhile). `fill` writes the content to a path in a fresh owner-only directory next to
 * the output, so nobody else can swap it; link(2) then publishes it under the final name, and fails
 * on anything already there (a symlink included) instead of following or replacing it.
 */
export async function publishNewFile(path: string, fill: (scratchFile: string) => Promise<void>): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const scratchDir = await mkdtemp(join(dirname(path), `.${basename(path)}.pyro-`));
  try {
    const scratchFile = join(scratchDir, "content");
    await fill(scratchFile);
    try {
      await link(scratchFile, path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EEXIST") throw alreadyExists(path);
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw error;
      // A filesystem without hard links: O_CREAT|O_EXCL also refuses any existing name, a symlink included.
      await copyFile(scratchFile, path, constants.COPYFILE_EXCL).catch((copyError: NodeJS.ErrnoException) => {
        throw copyError.code === "EEXIST" ? alreadyExists(path) : copyError;
      });
    }
  } finally {
    await rm(scratchDir, { recursive: true, force: true });
  }
}
