import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { PyroError } from "../errors.js";

/** A token file is one line; anything larger is not one. */
const MAX_TOKEN_FILE_BYTES = 4096;

/**
 * Reads the MCP bearer token from a file only its owner can read. The token never goes on the
 * command line, where every local user can read it from /proc/<pid>/cmdline.
 */
export async function readTokenFile(path: string): Promise<string> {
  let handle;
  try {
    // O_NOFOLLOW: the file checked below is the file read, not whatever a symlink points at later.
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ELOOP" ? "it is a symbolic link" : code === "ENOENT" ? "it does not exist" : (error as Error).message;
    throw new PyroError("INVALID_ARGUMENT", `cannot read the token file ${path}: ${why}`);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new PyroError("INVALID_ARGUMENT", `the token file ${path} is not a regular file`);
    if (process.getuid && stat.uid !== process.getuid()) {
      throw new PyroError("INVALID_ARGUMENT", `the token file ${path} is owned by uid ${stat.uid}, not by you; create your own (chmod 600)`);
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new PyroError(
        "INVALID_ARGUMENT",
        `the token file ${path} is readable by other users (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 ${path}`,
      );
    }
    if (stat.size > MAX_TOKEN_FILE_BYTES)
      throw new PyroError("INVALID_ARGUMENT", `the token file ${path} is larger than ${MAX_TOKEN_FILE_BYTES} bytes; it should hold one token`);
    return (await handle.readFile("utf8")).trim();
  } finally {
    await handle.close();
  }
}
