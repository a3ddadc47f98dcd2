import { constants } from "node:fs";
import { open, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { readQcow2Header } from "./qcow2-backing-chain.js";

/**
 * An empty qcow2 (version 3) overlay on a backing file, written in-process: the same image
 * `qemu-img create -f qcow2 -b BACKING -F FORMAT` makes, less its optional feature-name table.
 * Spawning qemu-img cost ~12 ms per overlay, and create, reset and every one-shot run layer two.
 *
 * Layout, one 64 KiB cluster each: 0 the header, its extensions and the backing name; 1 the refcount
 * table; 2 the one refcount block; 3 the L1 table (all zero: every read falls through to the backing).
 */

const QCOW2_MAGIC = 0x514649fb;
const CLUSTER_BITS = 16;
const CLUSTER = 1 << CLUSTER_BITS;
/** 16-bit refcounts (qemu's default). */
const REFCOUNT_ORDER = 4;
/** Version 3 header up to and including compression_type, padded to 8 bytes (qemu writes 112). */
const HEADER_LENGTH = 112;
const BACKING_FORMAT_EXTENSION = 0xe2792aca;
/** qemu's own limit on a backing file name. */
const MAX_BACKING_NAME = 1023;
/** Guest bytes one L1 entry covers: an L2 table of CLUSTER / 8 entries, each a cluster. */
const BYTES_PER_L1_ENTRY = (CLUSTER / 8) * CLUSTER;
const REFCOUNT_TABLE_OFFSET = CLUSTER;
const REFCOUNT_BLOCK_OFFSET = 2 * CLUSTER;
const L1_OFFSET = 3 * CLUSTER;
const METADATA_CLUSTERS = 4;

const pad8 = (n: number) => Math.ceil(n / 8) * 8;

/** The overlay's bytes up to the end of its L1 table (the clusters between are zeros, left as holes). */
export function emptyOverlayImage(
  backing: string,
  format: "raw" | "qcow2",
  virtualSize: number,
): { header: Buffer; refcounts: Buffer; refcountBlock: Buffer; l1Bytes: number } {
  const name = Buffer.from(backing, "utf8");
  if (name.length === 0 || name.length > MAX_BACKING_NAME || name.includes(0))
    throw new PyroError("INVALID_ARGUMENT", `cannot layer a disk on '${backing}': the backing file name must be 1-${MAX_BACKING_NAME} bytes without NUL`);
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize % 512 !== 0)
    throw new PyroError("INVALID_ARGUMENT", `cannot layer a disk on '${backing}': its size ${virtualSize} is not a positive multiple of 512 bytes`);
  const l1Entries = Math.ceil(virtualSize / BYTES_PER_L1_ENTRY);
  if (l1Entries * 8 > CLUSTER) throw new PyroError("INVALID_ARGUMENT", `cannot layer a disk on '${backing}': ${virtualSize} bytes is too large`);
  const formatName = Buffer.from(format, "ascii");
  const extensionsEnd = HEADER_LENGTH + 8 + pad8(formatName.length) + 8;
  const header = Buffer.alloc(extensionsEnd + name.length);
  header.writeUInt32BE(QCOW2_MAGIC, 0);
  header.writeUInt32BE(3, 4); // version
  header.writeBigUInt64BE(BigInt(extensionsEnd), 8); // backing_file_offset
  header.writeUInt32BE(name.length, 16); // backing_file_size
  header.writeUInt32BE(CLUSTER_BITS, 20);
  header.writeBigUInt64BE(BigInt(virtualSize), 24);
  // 32: crypt_method 0
  header.writeUInt32BE(l1Entries, 36);
  header.writeBigUInt64BE(BigInt(L1_OFFSET), 40);
  header.writeBigUInt64BE(BigInt(REFCOUNT_TABLE_OFFSET), 48);
  header.writeUInt32BE(1, 56); // refcount_table_clusters
  // 60: nb_snapshots, 64: snapshots_offset, 72/80/88: incompatible/compatible/autoclear features: all 0
  header.writeUInt32BE(REFCOUNT_ORDER, 96);
  header.writeUInt32BE(HEADER_LENGTH, 100);
  // 104: compression_type 0 (zlib) and padding
  header.writeUInt32BE(BACKING_FORMAT_EXTENSION, HEADER_LENGTH);
  header.writeUInt32BE(formatName.length, HEADER_LENGTH + 4);
  formatName.copy(header, HEADER_LENGTH + 8);
  // Then the end-of-extensions marker (8 zero bytes), then the backing file name.
  name.copy(header, extensionsEnd);
  const refcounts = Buffer.alloc(8);
  refcounts.writeBigUInt64BE(BigInt(REFCOUNT_BLOCK_OFFSET), 0);
  const refcountBlock = Buffer.alloc(METADATA_CLUSTERS * 2);
  for (let i = 0; i < METADATA_CLUSTERS; i++) refcountBlock.writeUInt16BE(1, i * 2);
  return { header, refcounts, refcountBlock, l1Bytes: l1Entries * 8 };
}

/** The guest size a disk on `backing` has: its qcow2 virtual size, or a raw file's length. */
async function backingSize(backing: string, format: "raw" | "qcow2"): Promise<number> {
  // qemu sees a raw file's length rounded up to whole 512-byte sectors.
  if (format === "raw") return Math.ceil((await stat(backing)).size / 512) * 512;
  const header = await readQcow2Header(backing);
  if (!header) throw new PyroError("HOST_COMMAND_FAILED", `${backing} is not a qcow2 image`);
  return header.virtualSize;
}

/**
 * Creates `path` (which must not exist; mode 0600) as an empty qcow2 overlay on `backing`. Like
 * qemu-img, it checks that the backing opens and takes its size from it; a relative backing name
 * is stored as given and means a path next to the overlay.
 */
export async function createEmptyOverlay(path: string, backing: string, format: "raw" | "qcow2"): Promise<void> {
  const image = emptyOverlayImage(backing, format, await backingSize(resolve(dirname(path), backing), format));
  const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await handle.write(image.header, 0, image.header.length, 0);
    await handle.write(image.refcounts, 0, image.refcounts.length, REFCOUNT_TABLE_OFFSET);
    await handle.write(image.refcountBlock, 0, image.refcountBlock.length, REFCOUNT_BLOCK_OFFSET);
    // The L1 table is zeros: extending the file over it is enough.
    await handle.truncate(L1_OFFSET + image.l1Bytes);
  } finally {
    await handle.close();
  }
}

/** The largest overlay copyOverlayOnto reads whole: a just-mounted, empty ext4's writes take a few clusters. */
const MAX_COPIED_OVERLAY_BYTES = 64 * 1024 * 1024;

/**
 * Writes a copy of qcow2 overlay `source` to `dest` (which must not exist; mode 0600) that names
 * `backing` as its backing file instead of the one `source` names: the same guest-visible disk
 * wherever `backing` holds the same bytes as `source`'s backing file. The name must sit in the
 * first cluster after the header (where createEmptyOverlay puts it, and QEMU leaves it); the new
 * name goes in its place.
 */
export async function copyOverlayOnto(source: string, dest: string, backing: string): Promise<void> {
  const handle = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW);
  let image: Buffer;
  try {
    const { size } = await handle.stat();
    if (size > MAX_COPIED_OVERLAY_BYTES || size < L1_OFFSET)
      throw new PyroError("HOST_COMMAND_FAILED", `${source} is not an overlay pyro can copy (${size} bytes)`);
    image = Buffer.alloc(size);
    const { bytesRead } = await handle.read(image, 0, size, 0);
    if (bytesRead !== size) throw new PyroError("HOST_COMMAND_FAILED", `${source} changed while it was copied`);
  } finally {
    await handle.close();
  }
  const name = Buffer.from(backing, "utf8");
  const offset = Number(image.readBigUInt64BE(8));
  const oldLength = image.readUInt32BE(16);
  const headerLength = image.readUInt32BE(100);
  if (
    image.readUInt32BE(0) !== QCOW2_MAGIC ||
    image.readUInt32BE(4) !== 3 ||
    image.readUInt32BE(20) !== CLUSTER_BITS ||
    oldLength === 0 ||
    offset < headerLength ||
    offset + Math.max(oldLength, name.length) > CLUSTER
  ) {
    throw new PyroError("HOST_COMMAND_FAILED", `${source} is not an overlay pyro can copy onto another backing file`);
  }
  if (name.length === 0 || name.length > MAX_BACKING_NAME || name.includes(0))
    throw new PyroError("INVALID_ARGUMENT", `cannot layer a disk on '${backing}': the backing file name must be 1-${MAX_BACKING_NAME} bytes without NUL`);
  image.fill(0, offset, offset + oldLength);
  name.copy(image, offset);
  image.writeUInt32BE(name.length, 16);
  const out = await open(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await out.write(image, 0, image.length, 0);
  } finally {
    await out.close();
  }
}
