import { rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { isPyroError, PyroError } from "../errors.js";
import { diskChain } from "../storage/qcow2-backing-chain.js";
import { createEmptyOverlay } from "../storage/qcow2-overlay.js";

/**
 * qcow2 layering, read from the files themselves: which disk depends on which is whatever the
 * images say, never a record field that a crash can leave stale.
 */

/**
 * The files `disk` reads through, nearest first, itself excluded, from the images' own headers.
 * Fails if any layer is missing or unreadable (the disk would not open).
 */
export async function backingChain(disk: string): Promise<string[]> {
  try {
    return (await diskChain(disk)).files.slice(1);
  } catch (error) {
    const why = isPyroError(error)
      ? error.message
      : (error as NodeJS.ErrnoException).code === "ENOENT"
        ? "a layer of its backing chain is missing"
        : String(error);
    throw new PyroError("GUEST_OPERATION_FAILED", `the disk ${disk} does not open: ${why}`, { disk });
  }
}

/** The temp name a new overlay is built under before it replaces a disk; recovery removes leftovers. */
export function partialOverlayPath(disk: string): string {
  return join(dirname(disk), `.${basename(disk)}.partial`);
}

/**
 * Replaces `disk` with what `build` writes at its partial path, atomically: a crash leaves the old
 * disk or the new one, never none; a failed build leaves the old one (and no partial file).
 */
export async function replaceDisk(disk: string, build: (partial: string) => Promise<void>): Promise<void> {
  const partial = partialOverlayPath(disk);
  await rm(partial, { force: true });
  try {
    await build(partial);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  await rename(partial, disk);
}

/** Replaces `disk` with an empty overlay on `backing` (atomically: replaceDisk). */
export function replaceWithOverlay(disk: string, backing: string, format: "raw" | "qcow2"): Promise<void> {
  return replaceDisk(disk, (partial) => createEmptyOverlay(partial, backing, format));
}
