import { open } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { PyroError } from "../errors.js";

/**
 * The files a qcow2 overlay needs, read from the fixed header fields only (magic, backing file
 * name, virtual size), so a sandboxed qemu-img can be shown exactly these files and nothing else.
 */

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** Overlay chains pyro makes are a few deep (workspace → snapshot → template → image). */
export const MAX_CHAIN_DEPTH = 16;
/** Backing file names are paths; qemu caps them at 1023 bytes. */
const MAX_BACKING_NAME = 1023;

export interface DiskChain {
  /** The image and every backing file, top first, as the paths qemu-img will open. */
  files: string[];
  /** Virtual size of the top image in bytes. */
  virtualSize: number;
}

export interface Qcow2Header {
  backing?: string;
  virtualSize: number;
  /** Version 3 incompatible feature bit 2: the guest data lives in another file the header names. */
  externalDataFile?: boolean;
}

/** Bytes of the header pyro reads: the version 3 fields up to incompatible_features. */
const HEADER_BYTES = 80;
const EXTERNAL_DATA_FILE_BIT = 1n << 2n;

/** Parses the first bytes of an image: undefined for a non-qcow2 (raw) file. */
export function parseQcow2Header(head: Buffer, readName: (offset: number, length: number) => Buffer | undefined): Qcow2Header | undefined {
  if (head.length < 32 || head.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
  const offset = head.readBigUInt64BE(8);
  const length = head.readUInt32BE(16);
  const virtualSize = Number(head.readBigUInt64BE(24));
  const externalDataFile = head.length >= HEADER_BYTES && head.readUInt32BE(4) >= 3 && (head.readBigUInt64BE(72) & EXTERNAL_DATA_FILE_BIT) !== 0n;
  if (offset === 0n || length === 0) return { virtualSize, ...(externalDataFile ? { externalDataFile } : {}) };
  if (length > MAX_BACKING_NAME || offset > BigInt(Number.MAX_SAFE_INTEGER))
    throw new PyroError("HOST_COMMAND_FAILED", "the disk overlay names an impossible backing file");
  const name = readName(Number(offset), length);
  if (!name || name.length !== length || name.includes(0)) throw new PyroError("HOST_COMMAND_FAILED", "the disk overlay's backing file name is unreadable");
  return { backing: name.toString("utf8"), virtualSize, ...(externalDataFile ? { externalDataFile } : {}) };
}

/** The qcow2 header of a file (undefined for a non-qcow2 file), read from its fixed fields only. */
export async function readQcow2Header(path: string): Promise<Qcow2Header | undefined> {
  return (await readHeader(path)).qcow2;
}

async function readHeader(path: string): Promise<Qcow2Header & { size: number; qcow2?: Qcow2Header }> {
  const handle = await open(path, "r");
  try {
    const size = (await handle.stat()).size;
    const head = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(head, 0, HEADER_BYTES, 0);
    let name: Buffer | undefined;
    if (bytesRead >= 32 && head.readUInt32BE(0) === QCOW2_MAGIC) {
      const offset = head.readBigUInt64BE(8);
      const length = head.readUInt32BE(16);
      if (offset > 0n && length > 0 && length <= MAX_BACKING_NAME && offset < BigInt(size)) {
        name = Buffer.alloc(length);
        const r = await handle.read(name, 0, length, Number(offset));
        name = name.subarray(0, r.bytesRead);
      }
    }
    const header = parseQcow2Header(head.subarray(0, bytesRead), () => name);
    return { ...(header ?? { virtualSize: size }), size, ...(header ? { qcow2: header } : {}) };
  } finally {
    await handle.close();
  }
}

/** Walks an overlay's backing chain down to its raw base. */
export async function diskChain(top: string): Promise<DiskChain> {
  const files = [top];
  const first = await readHeader(top);
  let header: Qcow2Header = first;
  while (header.backing !== undefined) {
    if (files.length > MAX_CHAIN_DEPTH) throw new PyroError("HOST_COMMAND_FAILED", `the disk's backing chain is deeper than ${MAX_CHAIN_DEPTH}`);
    const current = files[files.length - 1]!;
    const next = isAbsolute(header.backing) ? header.backing : resolve(dirname(current), header.backing);
    if (files.includes(next)) throw new PyroError("HOST_COMMAND_FAILED", "the disk's backing chain loops");
    files.push(next);
    header = await readHeader(next);
  }
  return { files, virtualSize: first.virtualSize };
}
