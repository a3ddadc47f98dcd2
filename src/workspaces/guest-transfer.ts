import { randomBytes } from "node:crypto";
import { isPyroError, PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import { capturedText } from "../guest-protocol/messages.js";
import { shellQuote } from "../process/shell-quote.js";
import { MAX_ARCHIVE_BYTES, validateTar } from "./archive-safety.js";

/** Frames carry at most 128 MiB; bigger transfers go in pieces of this size. */
const CHUNK_BYTES = 32 * 1024 * 1024;
/** A tar pulled out of the guest in one reply. */
const MAX_DOWNLOAD_BYTES = 120 * 1024 * 1024;

/** Extracts a (validated) tar into `dest` in the guest. Staged on the guest's disk, not in its RAM. */
export async function extractTarInGuest(agent: AgentClient, tar: Buffer, dest: string): Promise<void> {
  const staging = `/var/tmp/.pyro-upload-${randomBytes(6).toString("hex")}.tar`;
  try {
    let offset = 0;
    do {
      await agent.writeFile(staging, tar.subarray(offset, offset + CHUNK_BYTES), { append: offset > 0, mode: 0o600 });
      offset += CHUNK_BYTES;
    } while (offset < tar.length);
    const r = await agent.exec({
      command: `mkdir -p ${shellQuote(dest)} && tar -x -f ${shellQuote(staging)} -C ${shellQuote(dest)} --no-same-owner`,
      timeoutMs: 600_000,
    });
    if (r.exitCode !== 0) throw new PyroError("GUEST_OPERATION_FAILED", `extracting into ${dest} failed: ${capturedText(r.stderr).trim()}`);
  } finally {
    await agent.remove(staging).catch(() => undefined);
  }
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
