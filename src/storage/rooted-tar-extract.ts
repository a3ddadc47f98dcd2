import { chmod, lchown, lutimes } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Parser, type ReadEntry } from "tar";
import { isPyroError, PyroError } from "../errors.js";
import type { RootedTree } from "./rooted-path.js";
import { UnpackBudget } from "./unpack-budget.js";

export interface RootedExtractOptions {
  /** Entries to leave out (checked on the raw archive path before anything is written). */
  skip?: (path: string, entry: ReadEntry) => boolean;
  /** Keep the archive's uid/gid (only meaningful, and only allowed, when running as root). */
  preserveOwner?: boolean;
  /** Names the archive in error messages ("layer 2 of image.tar"). */
  label: string;
  /** What the archive may write; share one across the layers of an image. Default: a fresh full budget. */
  budget?: UnpackBudget;
}

const FILE_TYPES = new Set(["File", "OldFile", "ContiguousFile"]);

const isRoot = () => process.getuid?.() === 0;

/**
 * Unpacks a tar stream into a rooted tree without trusting node-tar's unpacker: the archive is only
 * parsed, and every entry is written through RootedTree, so its parent is resolved inside the root
 * (through any symlink chain an earlier entry or layer made), files are created O_EXCL|O_NOFOLLOW
 * after removing whatever was there, and hardlink targets resolve inside the root. Devices, FIFOs
 * and other special entries are left out (making them needs privileges pyro refuses to use).
 * Entries are applied strictly one after another, in archive order.
 */
export async function extractTarInRoot(tree: RootedTree, input: Readable, options: RootedExtractOptions): Promise<void> {
  const budget = options.budget ?? new UnpackBudget();
  let failure: unknown;
  let applied: Promise<void> = Promise.resolve();
  const parser = new Parser({
    strict: true,
    onReadEntry: (entry) => {
      // The parser emits a bodyless entry's successor at once, so entries are chained to keep order.
      applied = applied.then(async () => {
        try {
          if (failure === undefined) {
            // Charged from the header before anything is written: a hostile archive stops at the limit.
            budget.charge(FILE_TYPES.has(entry.type) ? (entry.size ?? 0) : 0);
            await writeEntry(tree, entry, options);
          }
        } catch (error) {
          failure = contextual(error, entry.path, options.label);
          input.destroy();
        } finally {
          entry.resume();
        }
      });
    },
  });
  try {
    await pipeline(input, parser as unknown as NodeJS.WritableStream);
  } catch (error) {
    if (failure === undefined)
      failure = new PyroError("UNSAFE_ARCHIVE", `${options.label} is not a valid tar archive: ${(error as Error).message}`, {}, { cause: error });
  }
  await applied;
  if (failure !== undefined) throw failure;
}

function contextual(error: unknown, path: string, label: string): unknown {
  if (!isPyroError(error)) return error;
  return new PyroError(error.code, `${label}, entry '${path}': ${error.message}`, error.details, { cause: error });
}

async function writeEntry(tree: RootedTree, entry: ReadEntry, options: RootedExtractOptions): Promise<void> {
  if (options.skip?.(entry.path, entry)) return;
  // The root itself ('./' in tars made with `tar -C dir .`): it exists already, and its mode stays pyro's.
  if (entry.type === "Directory" && entry.path.split("/").every((c) => c === "" || c === ".")) return;
  const mode = (entry.mode ?? 0o644) & 0o7777;
  const owner = options.preserveOwner && isRoot() && entry.uid !== undefined && entry.gid !== undefined ? { uid: entry.uid, gid: entry.gid } : undefined;
  if (entry.type === "Directory") {
    // Without root, a directory the image makes read-only would stop its own later entries: keep it ours to write.
    const hostPath = await tree.makeDirectory(entry.path, isRoot() ? mode : mode | 0o700);
    await chmod(hostPath, isRoot() ? mode : mode | 0o700);
    if (owner) await lchown(hostPath, owner.uid, owner.gid);
  } else if (FILE_TYPES.has(entry.type)) {
    const { handle } = await tree.createFile(entry.path, 0o600);
    try {
      for await (const chunk of entry as AsyncIterable<Buffer>) await handle.write(chunk);
      if (owner) await handle.chown(owner.uid, owner.gid);
      await handle.chmod(mode);
      if (entry.mtime) await handle.utimes(entry.atime ?? entry.mtime, entry.mtime);
    } finally {
      await handle.close();
    }
  } else if (entry.type === "SymbolicLink") {
    const hostPath = await tree.symlink(entry.path, entry.linkpath ?? "");
    if (owner) await lchown(hostPath, owner.uid, owner.gid);
    if (entry.mtime) await lutimes(hostPath, entry.atime ?? entry.mtime, entry.mtime);
  } else if (entry.type === "Link") {
    await tree.hardlink(entry.path, entry.linkpath ?? "");
  }
}
