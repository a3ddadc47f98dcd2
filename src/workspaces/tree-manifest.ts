import { isUtf8 } from "node:buffer";
import { PyroError } from "../errors.js";
import { TREE_MANIFEST_LIMITS } from "./workspace-limits.js";

/**
 * A tree's metadata, one record per entry: what the guest's `tree.manifest` walk returns for the
 * live /workspace, and what the seed builder saves for the baseline (the seed image's content).
 * Record: `type mode size mtime_ns ctime_ns ino nlink\0path\0target\0`, path relative to the tree's
 * root, target empty unless a symlink. Types: f file, d directory, l symlink, o anything else.
 * The guest's manifests are hostile input: every field is checked, never trusted to be sane.
 */
export interface ManifestEntry {
  path: string;
  type: "f" | "d" | "l" | "o";
  mode: number;
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: number;
  nlink: number;
  target: string;
}

/** Each header field after the type: its digits (the highest digit byte), most digits, and whether a '-' may lead. */
const HEADER_FIELDS: readonly { top: number; digits: number; signed: boolean }[] = [
  { top: 0x37, digits: 5, signed: false }, // mode, octal
  { top: 0x39, digits: 20, signed: false }, // size
  { top: 0x39, digits: 30, signed: true }, // mtime_ns
  { top: 0x39, digits: 30, signed: true }, // ctime_ns
  { top: 0x39, digits: 20, signed: false }, // ino
  { top: 0x39, digits: 20, signed: false }, // nlink
];

/**
 * Whether bytes[start, end) is a well-formed record header: a type, then HEADER_FIELDS separated by
 * single spaces, with size, ino and nlink safe integers. Checked on the bytes, without making a
 * string: for indexing a 200k-record manifest without ~1 KB of garbage per record.
 */
export function isWellFormedHeader(bytes: Buffer, start: number, end: number): boolean {
  const type = bytes[start];
  if (type !== 0x66 && type !== 0x64 && type !== 0x6c && type !== 0x6f) return false;
  let at = start + 1;
  for (let f = 0; f < HEADER_FIELDS.length; f++) {
    const { top, digits, signed } = HEADER_FIELDS[f]!;
    if (at >= end || bytes[at++] !== 0x20) return false;
    if (signed && at < end && bytes[at] === 0x2d) at++;
    let count = 0;
    let value = 0;
    for (; at < end && bytes[at]! >= 0x30 && bytes[at]! <= top; at++, count++) value = value * 10 + (bytes[at]! - 0x30);
    if (count === 0 || count > digits) return false;
    if ((f === 1 || f === 4 || f === 5) && !Number.isSafeInteger(value)) return false;
  }
  return at === end;
}

/** A manifest out of shape (GUEST_PROTOCOL_ERROR; callers reading a guest's rewrap it). */
function bad(why: string): PyroError {
  return new PyroError("GUEST_PROTOCOL_ERROR", `tree manifest is malformed: ${why}`);
}

export { bad as malformedManifest };

/**
 * Whether bytes[start, end) is a manifest path: non-empty, relative, no empty, '.' or '..'
 * component (no NUL: the record's fields end at one). Checked on the bytes, without making a
 * string; decoding keeps every ASCII byte, so the path's text has the same components.
 */
export function isPlainRelativePath(bytes: Buffer, start: number, end: number): boolean {
  if (start >= end) return false;
  let from = start;
  for (let at = start; at <= end; at++) {
    if (at < end && bytes[at] !== 0x2f) continue;
    const length = at - from;
    if (length === 0 || (length <= 2 && bytes[from] === 0x2e && (length === 1 || bytes[from + 1] === 0x2e))) return false;
    from = at + 1;
  }
  return true;
}

/**
 * Builds a manifest record by record into one growing buffer: a 200k-entry tree costs its ~8 MB of
 * records, where a list of entry objects costs ~100 MB.
 */
export class ManifestWriter {
  private buffer = Buffer.allocUnsafe(1 << 16);
  private length = 0;
  /** Records written so far. */
  count = 0;

  add(e: ManifestEntry): void {
    const record = `${e.type} ${e.mode.toString(8)} ${e.size} ${e.mtimeNs} ${e.ctimeNs} ${e.ino} ${e.nlink}\0${e.path}\0${e.target}\0`;
    const bytes = Buffer.byteLength(record, "utf8");
    if (this.length + bytes > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    this.length += this.buffer.write(record, this.length, "utf8");
    this.count++;
  }

  /** The records written (a view: valid until the next add). */
  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

export function encodeManifest(entries: Iterable<ManifestEntry>): Buffer {
  const writer = new ManifestWriter();
  for (const e of entries) writer.add(e);
  return Buffer.from(writer.bytes());
}

/**
 * A name's text. Linux names are bytes; one that is not UTF-8 has each byte above 0x7f written as
 * `\xNN` (as debugfs shows them), where lossy decoding would make two names one (`a\xff` and
 * `a\xfe` both `a\uFFFD`) and an honest guest's manifest fail as a name listed twice. Each path
 * component is decoded on its own, so a directory's children name it as its own record does.
 */
export function nameText(raw: Buffer): string {
  if (isUtf8(raw)) return raw.toString("utf8");
  const components: string[] = [];
  for (let from = 0; from <= raw.length; ) {
    const slash = raw.indexOf(0x2f, from);
    const to = slash < 0 ? raw.length : slash;
    const part = raw.subarray(from, to);
    if (isUtf8(part)) components.push(part.toString("utf8"));
    else {
      let text = "";
      for (const byte of part) text += byte < 0x80 ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
      components.push(text);
    }
    from = to + 1;
  }
  return components.join("/");
}

/** nameText of bytes[start, end): ASCII (most names) is read in place, without a Buffer view. */
function fieldText(bytes: Buffer, start: number, end: number): string {
  for (let i = start; i < end; i++) if (bytes[i]! >= 0x80) return nameText(bytes.subarray(start, end));
  return bytes.toString("latin1", start, end);
}

export interface ManifestReadOptions {
  /** Records beyond this fail the parse (default: TREE_MANIFEST_LIMITS.entries). */
  maxEntries?: number;
  /**
   * The order the records must come in, which decides what the parse keeps to check them:
   * - "walk", the agent's: each directory's entries together, in byte order of their names, after
   *   the directory's own record. Only the directories not yet walked are kept.
   * - "any": parents before their entries, otherwise any order (pyro's own baselines, some made
   *   from path lists). Every name is kept.
   */
  order?: "walk" | "any";
}

/**
 * Parses a manifest one record at a time: the caller holds one entry, never the whole list (a
 * 200k-file tree's entries as objects take ~60 MB; a hostile manifest's tiny records many times
 * that). Either order guarantees the same two things to whoever builds an archive from it: no path
 * is listed twice, and every path's parent is a directory listed before it (an entry "under" a
 * symlink would have the archive write through that link when unpacked). Throws
 * GUEST_PROTOCOL_ERROR (callers rewrap) on anything out of shape, GUEST_OPERATION_FAILED past
 * the entry limit. Records are checked as they are reached: a caller that writes while it reads
 * must treat a throw as "discard what was written".
 */
export function* manifestEntries(bytes: Buffer, options: ManifestReadOptions = {}): Generator<ManifestEntry> {
  const maxEntries = options.maxEntries ?? TREE_MANIFEST_LIMITS.entries;
  const walkOrder = options.order === "walk";
  // "any": every name, and the directories among them.
  const seen = new Set<string>();
  const directories = new Set<string>();
  // "walk": directories listed whose own entries have not come yet; the group being read and its last name's bytes.
  const pending = new Set<string>([""]);
  let group: string | undefined;
  let lastName = { start: 0, end: 0 };
  let count = 0;
  for (let at = 0; at < bytes.length; ) {
    if (count >= maxEntries) throw tooManyTreeEntries(maxEntries);
    const record = readRecord(bytes, at);
    const { entry, pathStart, pathEnd } = record;
    const path = entry.path;
    const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
    if (walkOrder) {
      const slash = bytes.lastIndexOf(0x2f, pathEnd - 1);
      const name = { start: slash >= pathStart ? slash + 1 : pathStart, end: pathEnd };
      if (parent === group) {
        if (bytes.compare(bytes, lastName.start, lastName.end, name.start, name.end) <= 0)
          throw bad(`'${path.slice(0, 200)}' is out of order (listed twice, or its directory's entries are not sorted)`);
      } else {
        if (!pending.delete(parent)) throw bad(`'${path.slice(0, 200)}' is not below a directory listed before it (or its directory's entries are split)`);
        group = parent;
      }
      lastName = name;
      if (entry.type === "d") pending.add(path);
    } else {
      if (seen.has(path)) throw bad(`path '${path.slice(0, 200)}' is listed twice`);
      if (parent && !directories.has(parent)) throw bad(`'${path.slice(0, 200)}' is not below a directory listed before it`);
      seen.add(path);
      if (entry.type === "d") directories.add(path);
    }
    count++;
    yield entry;
    at = record.next;
  }
}

/** The record at `offset` of a manifest already read through (no order checks: those need what came before). */
export function manifestEntryAt(bytes: Buffer, offset: number): ManifestEntry {
  return readRecord(bytes, offset).entry;
}

/** One record from `at`: its entry, where its path's bytes lie, and where the next record starts. */
function readRecord(bytes: Buffer, at: number): { entry: ManifestEntry; next: number; pathStart: number; pathEnd: number } {
  const fieldEnd = (from: number): number => {
    const end = bytes.indexOf(0, from);
    if (end < 0) throw bad("a record is cut off");
    return end;
  };
  const headEnd = fieldEnd(at);
  if (!isWellFormedHeader(bytes, at, headEnd)) throw bad("a record header is out of shape");
  const pathStart = headEnd + 1;
  const pathEnd = fieldEnd(pathStart);
  const path = fieldText(bytes, pathStart, pathEnd);
  if (!isPlainRelativePath(bytes, pathStart, pathEnd)) throw bad(`path '${path.slice(0, 200)}' is not a plain relative path`);
  const targetEnd = fieldEnd(pathEnd + 1);
  const target = fieldText(bytes, pathEnd + 1, targetEnd);
  // Checked above: ASCII fields separated by single spaces.
  const [type, mode, size, mtimeNs, ctimeNs, ino, nlink] = bytes.toString("latin1", at, headEnd).split(" ");
  const entry: ManifestEntry = {
    path,
    type: type as ManifestEntry["type"],
    mode: parseInt(mode!, 8) & 0o7777,
    size: Number(size),
    mtimeNs: BigInt(mtimeNs!),
    ctimeNs: BigInt(ctimeNs!),
    ino: Number(ino),
    nlink: Number(nlink),
    target,
  };
  return { entry, next: targetEnd + 1, pathStart, pathEnd };
}

/** Parses a whole manifest into a list (for callers that need every entry at once). */
export function parseManifest(bytes: Buffer, options?: ManifestReadOptions): ManifestEntry[] {
  return [...manifestEntries(bytes, options)];
}

/** A tree (a manifest, a disk walk, a baseline index) with more entries than pyro diffs or exports at once. */
export function tooManyTreeEntries(maxEntries: number): PyroError {
  return new PyroError(
    "GUEST_OPERATION_FAILED",
    `the tree holds more than ${maxEntries} files and directories, more than pyro diffs or exports at once; export a subdirectory, or remove files`,
    { max_entries: maxEntries },
  );
}
