import { randomBytes } from "node:crypto";
import { isPyroError, PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import { capturedText } from "../guest-protocol/messages.js";
import { MAX_PAYLOAD_LEN } from "../guest-protocol/frame-codec.js";
import { MAX_ARCHIVE_BYTES, validateTar, type ArchiveSummary } from "./archive-safety.js";
import { directoryTarBatches, FileTooLargeForBatch } from "./directory-tar-batches.js";

/** Frames carry at most 128 MiB; bigger transfers go in pieces of this size. */
const CHUNK_BYTES = 32 * 1024 * 1024;
/** A tar pulled out of the guest in one reply. */
const MAX_DOWNLOAD_BYTES = 120 * 1024 * 1024;

/** Upload staging files: uniquely named, so ones left by an interrupted pyro can be found and swept. */
const STAGING_DIR = "/var/tmp";
const STAGING_PREFIX = ".pyro-upload-";

/**
 * Removes staging files an interrupted upload left in the guest (callers hold the workspace lock,
 * so none is in use). The agent may still be finishing a write the dead pyro sent: its temp file
 * (".<name>.pyro-<n>.tmp", renamed into place when done) goes too, so that rename then fails.
 */
export async function removeStaleStaging(agent: AgentClient): Promise<void> {
  const r = await agent.exec({ command: `rm -f ${STAGING_DIR}/${STAGING_PREFIX}*.tar ${STAGING_DIR}/.${STAGING_PREFIX}*.tar.pyro-*.tmp`, timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new PyroError("GUEST_OPERATION_FAILED", `removing stale upload files failed: ${capturedText(r.stderr).trim()}`);
}

/**
 * Extracts a (validated) tar into `dest` in the guest. Staged on the guest's disk, not in its RAM;
 * unpacked by the agent beneath `dest`, so a symlink the guest planted there is never followed.
 */
export async function extractTarInGuest(agent: AgentClient, tar: Buffer, dest: string): Promise<void> {
  const staging = `${STAGING_DIR}/${STAGING_PREFIX}${randomBytes(6).toString("hex")}.tar`;
  try {
    let offset = 0;
    do {
      await agent.writeFile(staging, tar.subarray(offset, offset + CHUNK_BYTES), { append: offset > 0, mode: 0o600 });
      offset += CHUNK_BYTES;
    } while (offset < tar.length);
    await agent.extractArchive(staging, dest);
  } finally {
    await agent.remove(staging).catch(() => undefined);
  }
}

/** Room left in a request's payload for a file's own tar headers (pax names up to PATH_MAX and more). */
const BATCH_HEADER_ROOM = 1024 * 1024;

/**
 * Copies a host directory into `dest` in the guest as whole-entry tar batches the agent unpacks
 * from each request (tree.unpack), beneath `dest` as extractTarInGuest does. Returns the summary,
 * or undefined when this way cannot be taken and nothing needs undoing by the caller's fallback
 * (the staged tar): an agent older than tree.unpack, or a file bigger than one request (what went
 * before it is simply written again).
 *
 * The host reads the next batch while the guest unpacks the one before (most of a push's time is
 * the guest's). One request at a time: the agent answers requests on threads of their own, and
 * a batch may hold links to, or files inside, what an earlier one created.
 */
export async function pushDirectoryInBatches(agent: AgentClient, source: string, dest: string): Promise<ArchiveSummary | undefined> {
  const summary: ArchiveSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  let unpacking: Promise<unknown> = Promise.resolve();
  try {
    try {
      for await (const batch of directoryTarBatches(source, summary, MAX_PAYLOAD_LEN - BATCH_HEADER_ROOM)) {
        await unpacking;
        unpacking = agent.unpackTree(dest, batch);
        // Its failure is taken up at the next await; until then it is not an unhandled rejection.
        unpacking.catch(() => undefined);
      }
    } finally {
      // Whatever ends the reading (the last batch, a file too big, an error), the request in flight
      // is waited for: the caller's fallback must not race it, and its error comes first.
      await unpacking;
    }
  } catch (error) {
    if (error instanceof FileTooLargeForBatch) return undefined;
    if (isPyroError(error, "GUEST_OPERATION_FAILED") && error.details.guestCode === "unknown_op") return undefined;
    throw error;
  }
  return summary;
}

/**
 * Packs a guest directory (or file) into a tar, read back through the agent. The guest made it, so it
 * is checked like any hostile archive before a caller parses it, stores it or hands it to the user:
 * no absolute or '..' names, nothing written through a symlink, no devices or sparse entries, no
 * size bombs. Symlinks may point anywhere (they are workspace content, never followed on the host).
 */
export async function packInGuest(agent: AgentClient, dir: string, entries: string[] = ["."]): Promise<Buffer> {
  const r = await agent.exec({
    command: ["tar", "-c", "-f", "-", "-C", dir, "--", ...entries],
    timeoutMs: 600_000,
    maxOutputBytes: MAX_DOWNLOAD_BYTES,
  });
  if (r.exitCode !== 0) throw new PyroError("GUEST_OPERATION_FAILED", `archiving ${dir} failed: ${capturedText(r.stderr).trim()}`);
  if (r.stdout.totalBytes > r.stdout.bytes.length) {
    throw new PyroError("GUEST_OPERATION_FAILED", `${dir} is larger than ${MAX_DOWNLOAD_BYTES} bytes as an archive; export a subdirectory`);
  }
  try {
    await validateTar(r.stdout.bytes, false);
  } catch (error) {
    if (isPyroError(error, "UNSAFE_ARCHIVE")) throw agent.rejectGuestData(`the archive of ${dir} it sent is unsafe (${error.message})`);
    throw error;
  }
  return r.stdout.bytes;
}

/** Reads a whole guest file in chunks. */
/**
 * A guest file's bytes in pieces of at most CHUNK_BYTES, up to `limit` bytes (what the file held
 * when the caller looked): a guest that keeps answering cannot make the host read forever.
 */
export async function* readFileChunks(agent: AgentClient, path: string, limit: number): AsyncGenerator<Buffer> {
  let offset = 0;
  while (offset < limit) {
    const { data } = await agent.readFile(path, { offset, maxBytes: Math.min(CHUNK_BYTES, limit - offset) });
    if (data.length === 0) return;
    offset += data.length;
    yield data;
  }
}

export async function readWholeFile(agent: AgentClient, path: string, limit = MAX_ARCHIVE_BYTES): Promise<Buffer> {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const { data, size } = await agent.readFile(path, { offset, maxBytes: CHUNK_BYTES });
    parts.push(data);
    offset += data.length;
    if (offset >= size || data.length === 0) break;
    if (offset > limit) throw new PyroError("GUEST_OPERATION_FAILED", `${path} is larger than ${limit} bytes`);
  }
  return Buffer.concat(parts);
}
