import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { PyroError } from "../errors.js";
import type { ArchiveSummary } from "./archive-safety.js";
import { listDirectoryTree } from "./seed-files.js";
import { TAR_END, tarHeader, tarPadding } from "./tar-header.js";

/**
 * A host directory as a sequence of small, whole tars ("batches") for the guest to unpack straight
 * from each request's payload (the agent's `tree.unpack`): no archive of the whole tree in memory,
 * none staged on the guest's disk, and no tar library walking the tree entry by entry (node-tar
 * took ~0.5 s for 1000 small files; this is a plain walk, read and header per entry, with
 * synchronous calls: promise-based fs cost ~0.3 ms per file in thread-pool hops). The event loop is
 * given back every PUSH_YIELD_BYTES, so the previous batch's request keeps flowing to the guest
 * while the next one is read.
 *
 * Only files, directories and symlinks go (sockets, FIFOs and devices are skipped, as before); a
 * file with several names goes once, later names as hardlinks to the first. Names come from the
 * host's own walk, which never follows a symlink, so every entry is a plain relative path.
 */

/**
 * A batch is closed once it holds this many bytes (one bigger file makes a batch of its own). Small
 * enough that the host's reading of the first batch, the only one nobody waits beside, is short;
 * large enough that a request's round trip is small beside the guest's unpacking of it.
 */
export const PUSH_BATCH_BYTES = 4 * 1024 * 1024;
/** Host reading between two turns of the event loop (see the module comment). */
const PUSH_YIELD_BYTES = 512 * 1024;

export class FileTooLargeForBatch extends Error {
  constructor(readonly path: string) {
    super(`${path} does not fit one guest request`);
  }
}

/**
 * Yields the batches of `root`, filling `summary` as it goes. A file larger than `maxFileBytes`
 * throws FileTooLargeForBatch before anything of it is read (the caller takes another way).
 */
export async function* directoryTarBatches(root: string, summary: ArchiveSummary, maxFileBytes: number): AsyncGenerator<Buffer> {
  const { paths, skipped } = await listDirectoryTree(root);
  if (skipped.length) throw new PyroError("INVALID_ARGUMENT", `${join(root, skipped[0]!.path)}: ${skipped[0]!.reason}; nothing was pushed`);
  const firstName = new Map<string, string>();
  let parts: Buffer[] = [];
  let bytes = 0;
  let sinceYield = 0;
  const add = (piece: Buffer) => {
    parts.push(piece);
    bytes += piece.length;
    sinceYield += piece.length;
  };
  for (const rel of paths) {
    if (sinceYield >= PUSH_YIELD_BYTES) {
      sinceYield = 0;
      await nextTurn();
    }
    const hostPath = join(root, rel);
    const st = lstatSync(hostPath, { throwIfNoEntry: false });
    if (!st) continue; // gone since the walk: as if it never was
    const common = { path: `./${rel}`, mode: st.mode & 0o7777, uid: 0, gid: 0, mtime: st.mtime };
    if (st.isDirectory()) {
      add(tarHeader({ ...common, path: `./${rel}/`, type: "Directory", size: 0 }));
      summary.directories++;
    } else if (st.isSymbolicLink()) {
      add(tarHeader({ ...common, type: "SymbolicLink", linkpath: readlinkSync(hostPath), size: 0 }));
      summary.symlinks++;
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? firstName.get(key) : undefined;
      if (first !== undefined) {
        add(tarHeader({ ...common, type: "Link", linkpath: `./${first}`, size: 0 }));
      } else {
        if (st.size > maxFileBytes) throw new FileTooLargeForBatch(hostPath);
        // A big file travels alone, so no batch outgrows one request.
        if (st.size > PUSH_BATCH_BYTES && parts.length) {
          yield Buffer.concat([...parts, TAR_END]);
          parts = [];
          bytes = 0;
        }
        const data = readRegularFile(hostPath, maxFileBytes);
        add(tarHeader({ ...common, type: "File", size: data.length }));
        add(data);
        add(tarPadding(data.length));
        summary.bytes += data.length;
        if (st.nlink > 1) firstName.set(key, rel);
      }
      summary.files++;
    }
    if (bytes >= PUSH_BATCH_BYTES) {
      yield Buffer.concat([...parts, TAR_END]);
      parts = [];
      bytes = 0;
    }
  }
  if (parts.length) yield Buffer.concat([...parts, TAR_END]);
}

/** A file's bytes as they are now, opened without following a symlink swapped in since the walk. */
function readRegularFile(path: string, maxBytes: number): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) throw new PyroError("INVALID_ARGUMENT", `${path} changed into something other than a file while it was being pushed`);
    const data = readFileSync(fd);
    if (data.length > maxBytes) throw new FileTooLargeForBatch(path);
    return data;
  } finally {
    closeSync(fd);
  }
}
