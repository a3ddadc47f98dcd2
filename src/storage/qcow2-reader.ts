import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { MAX_CHAIN_DEPTH } from "./qcow2-backing-chain.js";

/**
 * Reads a disk's guest-visible bytes through its qcow2 backing chain, in-process: what the guest
 * sees on the device, without qemu-img. Only for pyro's own chains (overlays QEMU or pyro wrote on
 * a raw base), so the features it needs are the ones those use: version 2/3 headers, L1/L2 tables,
 * clusters unallocated (read from the backing file) or zero (read as zeros). Compressed, encrypted,
 * external-data and subcluster images are refused. Every table entry is still bounds-checked:
 * nothing is read outside a file, and the chain cannot loop.
 */

const QCOW2_MAGIC = 0x514649fb;
const BACKING_FORMAT_EXTENSION = 0xe2792aca;
/** qemu's own cap on the L1 table (QCOW_MAX_L1_SIZE). */
const MAX_L1_BYTES = 32 * 1024 * 1024;
/** Bits 9-55 of an L1 or L2 entry: the host offset. */
const OFFSET_MASK = 0x00fffffffffffe00n;
const L2_COMPRESSED = 1n << 62n;
const L2_ZERO = 1n;
/** Incompatible features a reader may ignore: dirty (refcounts stale; the tables are fine) and the compression type (no compressed cluster is read). */
const IGNORABLE_INCOMPATIBLE = 0b1001n;
/** L2 tables kept; each maps cluster_size/8 clusters (512 MiB with 64 KiB clusters). */
const L2_CACHE_TABLES = 64;

/** A disk's guest-visible bytes, read synchronously (the callers read from the host's page cache). */
export interface DiskReader {
  /** The guest-visible size in bytes. */
  readonly size: number;
  /** Fills `target` with the disk's bytes from `position`; past the end reads zeros. */
  readSync(target: Buffer, position: number): void;
  close(): void;
}

function invalid(file: string, why: string): PyroError {
  return new PyroError("DISK_IMAGE_INVALID", `the disk image ${file} cannot be read: ${why}`, { file });
}

/** One layer of a chain: fills target from position within its own virtual size. */
interface Layer {
  readonly path: string;
  readonly virtualSize: number;
  readInto(target: Buffer, targetOffset: number, length: number, position: number): void;
  close(): void;
}

function preadExact(fd: number, file: string, target: Buffer, targetOffset: number, length: number, position: number, fileSize: number): void {
  if (position < 0 || position + length > fileSize)
    throw invalid(file, `a table points at bytes ${position}-${position + length}, past its ${fileSize}-byte end`);
  for (let done = 0; done < length; ) {
    const got = readSync(fd, target, targetOffset + done, length - done, position + done);
    if (got === 0) throw invalid(file, "it got shorter while being read");
    done += got;
  }
}

class RawLayer implements Layer {
  constructor(
    readonly path: string,
    private readonly fd: number,
    private readonly fileSize: number,
    readonly virtualSize: number,
  ) {}

  readInto(target: Buffer, targetOffset: number, length: number, position: number): void {
    // qemu sees a raw file rounded up to whole sectors: the tail reads as zeros.
    const inFile = Math.max(0, Math.min(length, this.fileSize - position));
    if (inFile > 0) preadExact(this.fd, this.path, target, targetOffset, inFile, position, this.fileSize);
    target.fill(0, targetOffset + inFile, targetOffset + length);
  }

  close(): void {
    closeSync(this.fd);
  }
}

interface Qcow2Geometry {
  clusterBits: number;
  virtualSize: number;
  l1: Buffer;
  backing?: { name: string; format?: string };
}

function safeNumber(value: bigint, file: string, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(file, `its ${what} is out of range`);
  return Number(value);
}

/** Parses and checks a qcow2 header (first cluster) and loads its L1 table. */
function readGeometry(fd: number, file: string, fileSize: number): Qcow2Geometry {
  const head = Buffer.alloc(Math.min(fileSize, 4096));
  preadExact(fd, file, head, 0, head.length, 0, fileSize);
  if (head.length < 72) throw invalid(file, "its qcow2 header is truncated");
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw invalid(file, `qcow2 version ${version} is not supported`);
  const clusterBits = head.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) throw invalid(file, `cluster_bits ${clusterBits} is out of range`);
  const clusterSize = 2 ** clusterBits;
  if (head.readUInt32BE(32) !== 0) throw invalid(file, "it is encrypted");
  const virtualSize = safeNumber(head.readBigUInt64BE(24), file, "virtual size");
  let headerLength = 72;
  if (version === 3) {
    if (head.length < 104) throw invalid(file, "its qcow2 v3 header is truncated");
    const incompatible = head.readBigUInt64BE(72);
    if ((incompatible & ~IGNORABLE_INCOMPATIBLE) !== 0n)
      throw invalid(
        file,
        `it uses qcow2 features pyro does not read (incompatible feature bits 0x${incompatible.toString(16)}: corrupt, external data, or subclusters)`,
      );
    headerLength = head.readUInt32BE(100);
    if (headerLength < 104 || headerLength > head.length || headerLength % 8 !== 0) throw invalid(file, `header length ${headerLength} is out of range`);
  }
  // Header extensions: only the backing file's format matters (probing by magic would let a raw base whose first bytes spell qcow2 be read as one).
  let format: string | undefined;
  for (let at = headerLength; ; ) {
    if (at + 8 > head.length || at + 8 > clusterSize) throw invalid(file, "its header extensions run past the first cluster");
    const type = head.readUInt32BE(at);
    const length = head.readUInt32BE(at + 4);
    if (type === 0) break;
    const end = at + 8 + length;
    if (end > head.length) throw invalid(file, "a header extension runs past the first cluster");
    if (type === BACKING_FORMAT_EXTENSION) format = head.toString("latin1", at + 8, end);
    at = at + 8 + Math.ceil(length / 8) * 8;
  }
  let backing: Qcow2Geometry["backing"];
  const nameOffset = head.readBigUInt64BE(8);
  const nameLength = head.readUInt32BE(16);
  if (nameOffset !== 0n && nameLength !== 0) {
    const start = safeNumber(nameOffset, file, "backing file name offset");
    if (nameLength > 1023 || start + nameLength > Math.min(clusterSize, head.length)) throw invalid(file, "its backing file name is out of range");
    const name = head.subarray(start, start + nameLength);
    if (name.includes(0)) throw invalid(file, "its backing file name holds a NUL byte");
    backing = { name: name.toString("utf8"), ...(format !== undefined ? { format } : {}) };
  }
  const l1Entries = head.readUInt32BE(36);
  const l2Bits = clusterBits - 3;
  const needed = Math.ceil(virtualSize / 2 ** (clusterBits + l2Bits));
  if (l1Entries < needed || l1Entries * 8 > MAX_L1_BYTES) throw invalid(file, `its L1 table has ${l1Entries} entries for a ${virtualSize}-byte disk`);
  const l1Offset = safeNumber(head.readBigUInt64BE(40), file, "L1 table offset");
  if (l1Offset % clusterSize !== 0) throw invalid(file, "its L1 table is not cluster aligned");
  const l1 = Buffer.alloc(needed * 8);
  preadExact(fd, file, l1, 0, l1.length, l1Offset, fileSize);
  return { clusterBits, virtualSize, l1, ...(backing ? { backing } : {}) };
}

class Qcow2Layer implements Layer {
  private readonly clusterSize: number;
  private readonly l2Entries: number;
  private readonly l2Cache = new Map<number, Buffer>();

  constructor(
    readonly path: string,
    private readonly fd: number,
    private readonly fileSize: number,
    private readonly geometry: Qcow2Geometry,
    private readonly backing: Layer | undefined,
  ) {
    this.clusterSize = 2 ** geometry.clusterBits;
    this.l2Entries = this.clusterSize / 8;
  }

  get virtualSize(): number {
    return this.geometry.virtualSize;
  }

  private hostOffset(entry: bigint, what: string): number {
    const offset = Number(entry & OFFSET_MASK);
    if (offset % this.clusterSize !== 0) throw invalid(this.path, `${what} at ${offset} is not cluster aligned`);
    if (offset + this.clusterSize > this.fileSize) throw invalid(this.path, `${what} at ${offset} is past the file's end`);
    return offset;
  }

  private l2Table(l1Index: number): Buffer | undefined {
    const entry = this.geometry.l1.readBigUInt64BE(l1Index * 8);
    if ((entry & OFFSET_MASK) === 0n) return undefined;
    const offset = this.hostOffset(entry, "an L2 table");
    let table = this.l2Cache.get(offset);
    if (!table) {
      if (this.l2Cache.size >= L2_CACHE_TABLES) this.l2Cache.clear();
      table = Buffer.allocUnsafe(this.clusterSize);
      preadExact(this.fd, this.path, table, 0, this.clusterSize, offset, this.fileSize);
      this.l2Cache.set(offset, table);
    }
    return table;
  }

  /** Where a guest cluster's bytes are: in this file, zeros, or the backing file's. */
  private cluster(index: number): { at: number } | "zero" | "backing" {
    const table = this.l2Table(Math.floor(index / this.l2Entries));
    if (!table) return "backing";
    const entry = table.readBigUInt64BE((index % this.l2Entries) * 8);
    if (entry & L2_COMPRESSED) throw invalid(this.path, "it holds compressed clusters");
    if (entry & L2_ZERO) return "zero";
    if ((entry & OFFSET_MASK) === 0n) return "backing";
    return { at: this.hostOffset(entry, "a data cluster") };
  }

  readInto(target: Buffer, targetOffset: number, length: number, position: number): void {
    let done = 0;
    while (done < length) {
      const at = position + done;
      const index = Math.floor(at / this.clusterSize);
      const within = at - index * this.clusterSize;
      const where = this.cluster(index);
      // Runs of clusters that read from one place become one read.
      let run = Math.min(this.clusterSize - within, length - done);
      let next = index + 1;
      while (done + run < length) {
        const following = this.cluster(next);
        const joins =
          typeof where === "object" && typeof following === "object" ? following.at === where.at + (next - index) * this.clusterSize : where === following;
        if (!joins) break;
        run += Math.min(this.clusterSize, length - done - run);
        next++;
      }
      if (where === "zero") target.fill(0, targetOffset + done, targetOffset + done + run);
      else if (where === "backing") readLayer(this.backing, target, targetOffset + done, run, at);
      else preadExact(this.fd, this.path, target, targetOffset + done, run, where.at + within, this.fileSize);
      done += run;
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Reads a layer's range; past its own virtual size (or with no layer) the bytes are zeros, as qemu reads them. */
function readLayer(layer: Layer | undefined, target: Buffer, targetOffset: number, length: number, position: number): void {
  const inside = layer ? Math.max(0, Math.min(length, layer.virtualSize - position)) : 0;
  if (layer && inside > 0) layer.readInto(target, targetOffset, inside, position);
  target.fill(0, targetOffset + inside, targetOffset + length);
}

/** Opens a layer; a backing file that does not open is the image's fault, said as such. */
function openBacking(path: string, top: string | undefined): number {
  if (top === undefined) return openSync(path, "r");
  try {
    return openSync(path, "r");
  } catch (error) {
    throw invalid(top, `its backing file ${path} does not open (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
}

export interface OpenDiskOptions {
  /** Where a relative backing name of the top image resolves (default: the top image's directory): a copy of a top layer still means its original's neighbours. */
  topDirectory?: string;
}

/**
 * Opens `top` and its whole backing chain for reading. A qcow2 image is read as qcow2; a backing
 * file is read in the format its overlay names (or, without one, qcow2 if it starts with the magic).
 */
export function openDisk(top: string, options: OpenDiskOptions = {}): DiskReader {
  const opened: { path: string; fd: number; size: number }[] = [];
  const seen = new Set<string>();
  const layers: { path: string; fd: number; size: number; geometry?: Qcow2Geometry }[] = [];
  try {
    let path = top;
    let format: string | undefined;
    let directory = options.topDirectory ?? dirname(top);
    for (;;) {
      if (layers.length > MAX_CHAIN_DEPTH) throw invalid(top, `its backing chain is deeper than ${MAX_CHAIN_DEPTH}`);
      const fd = openBacking(path, layers.length === 0 ? undefined : top);
      const st = fstatSync(fd);
      opened.push({ path, fd, size: st.size });
      if (!st.isFile()) throw invalid(path, "it is not a regular file");
      const identity = `${st.dev}:${st.ino}`;
      if (seen.has(identity)) throw invalid(top, "its backing chain loops");
      seen.add(identity);
      const magic = Buffer.alloc(4);
      const isQcow2 =
        format === "qcow2" || (format === undefined && st.size >= 4 && readSync(fd, magic, 0, 4, 0) === 4 && magic.readUInt32BE(0) === QCOW2_MAGIC);
      if (format !== undefined && format !== "raw" && format !== "qcow2") throw invalid(path, `its format '${format}' is not supported`);
      if (!isQcow2) {
        layers.push({ path, fd, size: st.size });
        break;
      }
      if (st.size < 4 || readSync(fd, magic, 0, 4, 0) !== 4 || magic.readUInt32BE(0) !== QCOW2_MAGIC) throw invalid(path, "it is not a qcow2 image");
      const geometry = readGeometry(fd, path, st.size);
      layers.push({ path, fd, size: st.size, geometry });
      if (!geometry.backing) break;
      path = isAbsolute(geometry.backing.name) ? geometry.backing.name : resolve(directory, geometry.backing.name);
      format = geometry.backing.format;
      directory = dirname(path);
    }
  } catch (error) {
    for (const f of opened) closeSync(f.fd);
    throw error;
  }
  // Built bottom up: each qcow2 layer reads through the one below it.
  let below: Layer | undefined;
  for (const layer of layers.reverse()) {
    below = layer.geometry
      ? new Qcow2Layer(layer.path, layer.fd, layer.size, layer.geometry, below)
      : new RawLayer(layer.path, layer.fd, layer.size, Math.ceil(layer.size / 512) * 512);
  }
  const topLayer = below!;
  const all = layers;
  return {
    size: topLayer.virtualSize,
    readSync(target: Buffer, position: number): void {
      if (!Number.isSafeInteger(position) || position < 0) throw new PyroError("DISK_IMAGE_INVALID", `disk read at ${position} is out of range`);
      readLayer(topLayer, target, 0, target.length, position);
    },
    close(): void {
      for (const layer of all) closeSync(layer.fd);
    },
  };
}
