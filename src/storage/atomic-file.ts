import { randomBytes } from "node:crypto";
import { closeSync, fsync, openSync, readFileSync, renameSync, rmSync, writeFile, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import type { z } from "zod";
import { PRIVATE_FILE_MODE } from "./private-storage.js";

/** The largest write writeFileAtomic makes in line (see there). */
const IN_LINE_WRITE_MAX_BYTES = 64 * 1024;

/**
 * Writes a file so readers see the old or the new content, never a torn mix, even across a crash.
 * Owner-only unless a mode is given: most of what pyro writes is its own state.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = PRIVATE_FILE_MODE): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  // State files (records, manifests) go in line but for the fsync: every operation writes one (an
  // exec its workspace's record), and each of the five other steps through the thread pool cost a
  // round of thread wake-ups (~0.7 ms of an exec). The fsync may wait on the disk, and so may a
  // large write (a kernel, an initramfs): those never block the event loop.
  const fd = await openNew(tmp, mode);
  try {
    if (data.length <= IN_LINE_WRITE_MAX_BYTES) writeFileSync(fd, data);
    else await new Promise<void>((resolve, reject) => writeFile(fd, data, (error) => (error ? reject(error) : resolve())));
    await new Promise<void>((resolve, reject) => fsync(fd, (error) => (error ? reject(error) : resolve())));
  } catch (error) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (error) {
    rmSync(tmp, { force: true });
    throw error;
  }
}

/** Creates `path` (never an existing file or link), making its directory when it is missing. */
async function openNew(path: string, mode: number): Promise<number> {
  try {
    return openSync(path, "wx", mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  await mkdir(dirname(path), { recursive: true });
  return openSync(path, "wx", mode);
}

export async function writeJsonAtomic(path: string, value: unknown, mode = PRIVATE_FILE_MODE): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n", mode);
}

/**
 * Reads and validates a JSON file; undefined when missing, unreadable or not matching the schema.
 * Read in line: these are small state files read by every operation (a workspace's record), where
 * the thread pool's four round trips (open, stat, read, close) cost more than the read.
 */
export async function readJsonIfValid<T>(path: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
