import { readFile, rm } from "node:fs/promises";
import { randomInt } from "node:crypto";
import { join } from "node:path";
import { isPyroError, PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { type Ext4Entry, Ext4Reader } from "../storage/ext4-reader.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { type DiskReader, openDisk } from "../storage/qcow2-reader.js";
import { copyTopLayerAtOneMoment } from "./frozen-disk-view.js";
import { WORKSPACE_ROOT } from "./guest-paths.js";
import { readFileChunks } from "./guest-transfer.js";
import type { Redactor } from "./secret-redaction.js";
import {
  isPlainRelativePath,
  isWellFormedHeader,
  type ManifestEntry,
  malformedManifest,
  manifestEntries,
  manifestEntryAt,
  nameText,
  parseManifest,
  tooManyTreeEntries,
} from "./tree-manifest.js";
import { baselineManifestPath, seedImagePath, workspaceDiskPath } from "./workspace-disk-files.js";
import type { WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import { formatFileDiff, type TreeEntry } from "./file-diff.js";
import { DIFF_PAGE_LIMITS, TREE_MANIFEST_LIMITS } from "./workspace-limits.js";

/**
 * Diff of a workspace whose /workspace is its own disk, against the seed image it was built from.
 * What changed is found from metadata alone, on the host: the disk's top layer is copied at one
 * moment (the guest's filesystem frozen: frozen-disk-view.ts), its ext4 walked in-process, and the
 * walk compared with the manifest saved when the seed image was built. Every inode mkfs wrote has a
 * ctime at or before the build finished, and any change in the guest (contents, mode, rename, link)
 * sets a later one, so an entry changed iff it is new, gone, of another type/mode/size/target, or
 * has a later ctime. Only the changed files' contents are ever read, one page at a time: the
 * current ones from the copy, the baseline ones from the seed image, both with the same reader.
 * The guest wrote every byte of the copy; the reader treats them as hostile. Where it cannot read
 * them (a damaged or unsupported filesystem), the guest's own view is asked for instead: its
 * changes since the seed (tree.changes) and its files' contents.
 */

export { DIFF_PAGE_LIMITS };

const MAX_MANIFEST_BYTES = TREE_MANIFEST_LIMITS.bytes;

export interface DiffOptions {
  /** Paths and counts only: no file contents are read. */
  summary?: boolean;
  /** Index of the first changed file to list (from a previous result's next_offset). */
  offset?: number;
  /** Changed files per page (default and maximum: DIFF_PAGE_LIMITS). */
  limit?: number;
}

export interface Change {
  path: string;
  status: "added" | "modified" | "deleted";
  before?: ManifestEntry;
  after?: ManifestEntry;
}

/**
 * A path's 30-bit hash: FNV-1a over its UTF-16 units (an ASCII path's bytes are the same units),
 * started from a seed drawn per index. With a fixed start, a seed archive's paths could be chosen
 * to share home slots (FNV's low bits are cheap to aim): 60k such paths took 13 s to index, and
 * the 500k limit ~15 min on every diff.
 */
const hashStep = (hash: number, unit: number) => Math.imul(hash ^ unit, 0x01000193);
const hashEnd = (hash: number) => hash & 0x3fffffff;

function pathHash(seed: number, path: string): number {
  let hash = seed;
  for (let i = 0; i < path.length; i++) hash = hashStep(hash, path.charCodeAt(i));
  return hashEnd(hash);
}

/** A hash's home slot: its bits mixed (murmur3's finalizer), so the slot depends on every bit of the seed, not FNV's low ones alone. */
function homeSlot(hash: number, mask: number): number {
  let h = hash ^ (hash >>> 16);
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) & mask;
}

const SLASH = 0x2f;
const TYPE_DIRECTORY = 0x64; // 'd'

/**
 * Where each path of pyro's baseline manifest lies, without an object or string per record: an
 * open-addressing table of record ordinals by path hash, in typed arrays. Building it makes no
 * garbage per record, and a lookup none for an ASCII path: with 200k records, a Map and a Set of
 * paths plus a parse of every record cost ~65 MB of peak RSS. Records are checked as they are
 * indexed (header, path shape, no path twice, each path's parent a directory listed before it,
 * the entry limit): what the any-order parse guarantees. Paths are compared as text (as the walk
 * shows them: a name that is not UTF-8 with `\xNN` escapes).
 */
export class ManifestIndex {
  /** Record start offsets, by ordinal. */
  private readonly offsets: Uint32Array;
  /** Header lengths, by ordinal (a checked header is at most ~130 bytes): where each path starts, without finding its NUL again. */
  private readonly headLengths: Uint8Array;
  /** Slot to ordinal + 1 (0: empty). */
  private readonly slots: Uint32Array;
  /** Each slot's path hash (a probe compares paths only where hashes match). */
  private readonly slotHashes: Uint32Array;
  /** Ordinals whose path holds a byte above 0x7f (compared as decoded text). */
  private readonly unusual: Uint8Array;
  private readonly mask: number;
  /** Records in the manifest. */
  readonly count: number;

  constructor(
    private readonly bytes: Buffer,
    maxEntries: number = TREE_MANIFEST_LIMITS.entries,
    /** Where each path's hash starts (random: a test may fix it to make two paths collide). */
    private readonly hashSeed: number = randomInt(2 ** 32),
  ) {
    // Pass 1: where the records start (three NUL-ended fields each), each header and path checked.
    let offsets = new Uint32Array(1024);
    let headLengths = new Uint8Array(1024);
    let count = 0;
    for (let at = 0; at < bytes.length; ) {
      if (count >= maxEntries) throw tooManyTreeEntries(maxEntries);
      if (count === offsets.length) {
        const grown = new Uint32Array(offsets.length * 2);
        grown.set(offsets);
        offsets = grown;
        const grownLengths = new Uint8Array(offsets.length);
        grownLengths.set(headLengths);
        headLengths = grownLengths;
      }
      const headEnd = bytes.indexOf(0, at);
      const pathEnd = headEnd < 0 ? -1 : bytes.indexOf(0, headEnd + 1);
      const targetEnd = pathEnd < 0 ? -1 : bytes.indexOf(0, pathEnd + 1);
      if (targetEnd < 0) throw malformedManifest("a record is cut off");
      if (!isWellFormedHeader(bytes, at, headEnd)) throw malformedManifest("a record header is out of shape");
      if (!isPlainRelativePath(bytes, headEnd + 1, pathEnd))
        throw malformedManifest(`path '${nameText(bytes.subarray(headEnd + 1, pathEnd)).slice(0, 200)}' is not a plain relative path`);
      offsets[count] = at;
      headLengths[count++] = headEnd - at;
      at = targetEnd + 1;
    }
    this.offsets = offsets;
    this.headLengths = headLengths;
    this.count = count;
    let size = 16;
    while (size < count * 2) size *= 2;
    this.mask = size - 1;
    this.slots = new Uint32Array(size);
    this.slotHashes = new Uint32Array(size);
    this.unusual = new Uint8Array(count);
    // Pass 2: insert each record, in order, checking it is new and its parent a directory listed before it.
    // The last parent found, as a range of the manifest's bytes (none yet).
    let parentStart = 0;
    let parentEnd = 0;
    let parentKnown = false;
    for (let ordinal = 0; ordinal < count; ordinal++) {
      const pathStart = this.pathStart(ordinal);
      const pathEnd = bytes.indexOf(0, pathStart);
      let hash = hashSeed;
      for (let i = pathStart; i < pathEnd && !this.unusual[ordinal]; i++) {
        if (bytes[i]! >= 0x80) this.unusual[ordinal] = 1;
        hash = hashStep(hash, bytes[i]!);
      }
      const text = this.unusual[ordinal] ? this.pathText(ordinal) : undefined;
      hash = text !== undefined ? pathHash(hashSeed, text) : hashEnd(hash);
      if (this.probe(hash, text, pathStart, pathEnd) !== undefined) throw malformedManifest(`path '${this.pathText(ordinal).slice(0, 200)}' is listed twice`);
      // The parent: checked once for each run of records in one directory.
      let slash = pathEnd - 1;
      while (slash >= pathStart && bytes[slash] !== SLASH) slash--;
      if (slash >= pathStart && !(parentKnown && bytes.compare(bytes, parentStart, parentEnd, pathStart, slash) === 0)) {
        const parent = text !== undefined ? this.find(text.slice(0, text.lastIndexOf("/"))) : this.findBytes(pathStart, slash);
        if (parent === undefined || bytes[offsets[parent]!] !== TYPE_DIRECTORY)
          throw malformedManifest(`'${this.pathText(ordinal).slice(0, 200)}' is not below a directory listed before it`);
        parentStart = pathStart;
        parentEnd = slash;
        parentKnown = true;
      }
      let slot = homeSlot(hash, this.mask);
      while (this.slots[slot] !== 0) slot = (slot + 1) & this.mask;
      this.slots[slot] = ordinal + 1;
      this.slotHashes[slot] = hash;
    }
  }

  /**
   * The ordinal whose path hashes to `hash` and is `path` (where given) or else the ASCII bytes
   * [start, end) of the manifest.
   */
  private probe(hash: number, path: string | undefined, start: number, end: number): number | undefined {
    for (let slot = homeSlot(hash, this.mask); this.slots[slot] !== 0; slot = (slot + 1) & this.mask) {
      if (this.slotHashes[slot] !== hash) continue;
      const ordinal = this.slots[slot]! - 1;
      if (path !== undefined ? this.pathIs(ordinal, path) : this.sameBytes(ordinal, start, end)) return ordinal;
    }
    return undefined;
  }

  /** Where record `ordinal`'s path starts (it ends at the next NUL). */
  private pathStart(ordinal: number): number {
    return this.offsets[ordinal]! + this.headLengths[ordinal]! + 1;
  }

  /** The path of a record, as text. */
  private pathText(ordinal: number): string {
    const start = this.pathStart(ordinal);
    return nameText(this.bytes.subarray(start, this.bytes.indexOf(0, start)));
  }

  /** Whether record `ordinal`'s path is `path` (no string made for an ASCII one). */
  private pathIs(ordinal: number, path: string): boolean {
    if (this.unusual[ordinal]) return this.pathText(ordinal) === path;
    const start = this.pathStart(ordinal);
    if (this.bytes[start + path.length] !== 0) return false;
    for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) !== this.bytes[start + i]) return false;
    return true;
  }

  /** Whether record `ordinal`'s path is the ASCII bytes [start, end) of the manifest. */
  private sameBytes(ordinal: number, start: number, end: number): boolean {
    // Another record's escaped text can spell an ASCII path.
    if (this.unusual[ordinal]) return this.pathText(ordinal) === this.bytes.toString("latin1", start, end);
    const from = this.pathStart(ordinal);
    return this.bytes[from + (end - start)] === 0 && this.bytes.compare(this.bytes, start, end, from, from + (end - start)) === 0;
  }

  /** The ordinal of the ASCII path at bytes [start, end) of the manifest. */
  private findBytes(start: number, end: number): number | undefined {
    let hash = this.hashSeed;
    for (let i = start; i < end; i++) hash = hashStep(hash, this.bytes[i]!);
    return this.probe(hashEnd(hash), undefined, start, end);
  }

  /** The ordinal of `path`'s record, if the manifest has it. */
  find(path: string): number | undefined {
    return this.probe(pathHash(this.hashSeed, path), path, 0, 0);
  }

  /** `path`'s record and its ordinal, if the manifest has it (the record read once). */
  lookup(path: string): { ordinal: number; entry: ManifestEntry } | undefined {
    const ordinal = this.find(path);
    return ordinal === undefined ? undefined : { ordinal, entry: this.entry(ordinal) };
  }

  entry(ordinal: number): ManifestEntry {
    return manifestEntryAt(this.bytes, this.offsets[ordinal]!);
  }

  /** A record's type, read in place. */
  type(ordinal: number): ManifestEntry["type"] {
    return String.fromCharCode(this.bytes[this.offsets[ordinal]!]!) as ManifestEntry["type"];
  }

  /**
   * Whether record `ordinal` has the mode, size (for files) and target of `after`: read in place
   * (the header was checked when indexed), making a string only for a symlink's target.
   */
  sameShape(ordinal: number, after: ManifestEntry): boolean {
    const bytes = this.bytes;
    let at = this.offsets[ordinal]! + 2;
    let mode = 0;
    for (; bytes[at] !== 0x20; at++) mode = mode * 8 + (bytes[at]! - 0x30);
    if ((mode & 0o7777) !== after.mode) return false;
    if (after.type === "f") {
      let size = 0;
      for (at++; bytes[at] !== 0x20; at++) size = size * 10 + (bytes[at]! - 0x30);
      if (size !== after.size) return false;
    }
    const end = this.bytes.indexOf(0, this.pathStart(ordinal));
    const targetEnd = bytes.indexOf(0, end + 1);
    if (targetEnd === end + 1) return after.target === "";
    return nameText(bytes.subarray(end + 1, targetEnd)) === after.target;
  }
}

/**
 * A change as a diff holds it until its page is shown: the baseline's record by ordinal and the
 * current entry as its tree keeps it (`Kept`), not as objects: a diff where all 200k files changed
 * held ~100 MB of entries for a page of 100.
 */
export interface HeldChange<Kept> {
  path: string;
  status: Change["status"];
  baseline?: number;
  current?: Kept;
}

/**
 * What changed between pyro's baseline manifest (indexed) and the current entries, in walk order
 * then baseline order. Directories count only through their contents (as in git): an empty
 * directory added or removed is not a change. Neither manifest is held as objects: the baseline is
 * read in place, the current one compared as it is parsed, and `keep` decides what of a changed
 * current entry is held.
 */
export function heldChanges<Kept>(
  index: ManifestIndex,
  current: Iterable<ManifestEntry>,
  builtAtNs: bigint,
  keep: (after: ManifestEntry) => Kept,
): HeldChange<Kept>[] {
  const present = new Uint8Array(index.count);
  const changes: HeldChange<Kept>[] = [];
  for (const after of current) {
    const ordinal = index.find(after.path);
    if (ordinal === undefined) {
      if (after.type !== "d") changes.push({ path: after.path, status: "added", current: keep(after) });
      continue;
    }
    present[ordinal] = 1;
    const baseType = index.type(ordinal);
    if (baseType === "d" && after.type === "d") continue;
    if (baseType !== after.type) {
      // A directory that became a file (or back): its former contents are listed as deleted/added.
      if (baseType === "d") changes.push({ path: after.path, status: "added", current: keep(after) });
      else if (after.type === "d") changes.push({ path: after.path, status: "deleted", baseline: ordinal });
      else changes.push({ path: after.path, status: "modified", baseline: ordinal, current: keep(after) });
      continue;
    }
    if (!index.sameShape(ordinal, after) || after.ctimeNs > builtAtNs)
      changes.push({ path: after.path, status: "modified", baseline: ordinal, current: keep(after) });
  }
  for (let ordinal = 0; ordinal < index.count; ordinal++) {
    if (present[ordinal] || index.type(ordinal) === "d") continue;
    changes.push({ path: index.entry(ordinal).path, status: "deleted", baseline: ordinal });
  }
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** A held change with its entries. */
function changeOf<Kept>(change: HeldChange<Kept>, index: ManifestIndex, entry: (kept: Kept, path: string) => ManifestEntry): Change {
  return {
    path: change.path,
    status: change.status,
    ...(change.baseline !== undefined ? { before: index.entry(change.baseline) } : {}),
    ...(change.current !== undefined ? { after: entry(change.current, change.path) } : {}),
  };
}

/** What changed between pyro's baseline manifest (bytes) and the current entries, sorted by path, with both sides' entries. */
export function changedEntries(baseline: Buffer | ManifestIndex, current: Iterable<ManifestEntry>, builtAtNs: bigint): Change[] {
  const index = baseline instanceof ManifestIndex ? baseline : new ManifestIndex(baseline);
  const same = (after: ManifestEntry) => after;
  return heldChanges(index, current, builtAtNs, same).map((c) => changeOf(c, index, same));
}

/**
 * The guest's manifest of `dir` (default /workspace), checked like any guest data: parsed record by
 * record as the caller iterates (once), a malformed record closing the connection as a protocol
 * violation.
 */
async function guestManifest(agent: AgentClient, dir = WORKSPACE_ROOT): Promise<Iterable<ManifestEntry>> {
  const { header, payload } = await agent.treeManifest(dir, MAX_MANIFEST_BYTES, 600_000);
  if (header.truncated === true) throw tooManyEntries(dir);
  return (function* () {
    try {
      yield* manifestEntries(payload, { order: "walk" });
    } catch (error) {
      if (isPyroError(error, "GUEST_PROTOCOL_ERROR")) throw agent.rejectGuestData(error.message);
      throw error;
    }
  })();
}

const tooManyEntries = (dir: string) =>
  new PyroError("GUEST_OPERATION_FAILED", `${dir} has too many entries to diff (its listing is over ${MAX_MANIFEST_BYTES >> 20} MiB)`);

/** The guest's `tree.changes` of /workspace, checked like any guest data (a subset of a walk: parsed whole, in any order). */
function checkedChanges(agent: AgentClient, truncated: boolean, payload: Buffer): ManifestEntry[] {
  if (truncated) throw tooManyEntries(WORKSPACE_ROOT);
  try {
    return parseManifest(payload);
  } catch (error) {
    if (isPyroError(error, "GUEST_PROTOCOL_ERROR")) throw agent.rejectGuestData(error.message);
    throw error;
  }
}

/** Past this many moved directories (each fetched whole), one full manifest is asked for instead. */
const MAX_MOVED_DIRECTORIES = 64;

const parentOf = (path: string) => path.slice(0, Math.max(0, path.lastIndexOf("/")));

/** What rebuilding the current manifest may ask for besides the guest's changes. */
export interface ChangeSources {
  /** The inode numbers these paths had in the baseline (the seed image); absent ones are left out. */
  baselineInodes(paths: string[]): Promise<Map<string, number>>;
  /** The guest's whole manifest of one directory, paths relative to it. */
  fetchSubtree(path: string): Promise<ManifestEntry[]>;
}

/**
 * The whole current manifest, rebuilt from the baseline and what the guest's `tree.changes` sent
 * (`changed`: every entry with a ctime after `sinceNs`, the children of the root and of every such
 * directory, and the directories above them). An entry that was not sent has not changed since the
 * baseline and neither has its name in its directory (creating, removing or renaming a name sets
 * the ctime of its directory, and a rename that of what moved); so it is where the baseline has it
 * unless a directory above it moved. A directory that moved has a new ctime, so it was listed
 * whole, but the directories in it that did not change were not walked: where a changed directory
 * holds such unchanged ones, it is checked to be the baseline's directory at its path (same inode
 * in the seed image), else fetched whole. Returns undefined when so many directories moved that
 * one full manifest is cheaper.
 */
export async function rebuildCurrentManifest(
  baseline: Buffer | ManifestIndex,
  changed: ManifestEntry[],
  sinceNs: bigint,
  sources: ChangeSources,
): Promise<Iterable<ManifestEntry> | undefined> {
  const index = baseline instanceof ManifestIndex ? baseline : new ManifestIndex(baseline);
  const baselineType = (path: string): ManifestEntry["type"] | undefined => {
    const ordinal = index.find(path);
    return ordinal === undefined ? undefined : index.type(ordinal);
  };
  const now = new Map(changed.map((e) => [e.path, e]));
  // Directories whose children were all sent: the root, and every directory that changed itself.
  const complete = new Set([""]);
  for (const e of changed) if (e.type === "d" && e.ctimeNs > sinceNs) complete.add(e.path);
  // Changed directories holding unchanged ones (whose contents were not sent); the root never moves.
  const holders = new Set<string>();
  for (const e of changed) {
    const parent = parentOf(e.path);
    if (e.type === "d" && e.ctimeNs <= sinceNs && parent && complete.has(parent)) holders.add(parent);
  }
  const inBaseline = [...holders].filter((d) => baselineType(d) === "d");
  const baselineInodes = inBaseline.length ? await sources.baselineInodes(inBaseline) : new Map<string, number>();
  const moved: string[] = [];
  for (const dir of [...holders].sort()) {
    if (baselineInodes.get(dir) === now.get(dir)!.ino) continue;
    if (!moved.some((m) => dir.startsWith(`${m}/`))) moved.push(dir);
  }
  if (moved.length > MAX_MOVED_DIRECTORIES) return undefined;
  for (const dir of moved) {
    for (const e of await sources.fetchSubtree(dir)) {
      const path = `${dir}/${e.path}`;
      now.set(path, { ...e, path });
      if (e.type === "d") complete.add(path);
    }
  }
  const alive = new Map<string, boolean>([["", true]]);
  // Whether the directory at `dir` still holds what the baseline had there (where not sent).
  const holdsBaseline = (dir: string): boolean => {
    let known = alive.get(dir);
    if (known === undefined) {
      const sent = now.get(dir);
      known = sent ? sent.type === "d" && baselineType(dir) === "d" : baselineKept(dir);
      alive.set(dir, known);
    }
    return known;
  };
  // A baseline entry that was not sent is still there iff its directory was not listed whole
  // without it and that directory still holds the baseline's contents.
  const baselineKept = (path: string): boolean => {
    const parent = parentOf(path);
    return !complete.has(parent) && holdsBaseline(parent);
  };
  // Only the changes are held; the unchanged rest is read from the baseline as the caller iterates.
  return (function* () {
    yield* now.values();
    // By ordinal through the index: a fresh parse of the baseline would check it again, keeping every name.
    for (let ordinal = 0; ordinal < index.count; ordinal++) {
      const e = index.entry(ordinal);
      if (!now.has(e.path) && baselineKept(e.path)) yield e;
    }
  })();
}

/**
 * The guest's own view of /workspace, where the host cannot read the disk: its manifest rebuilt
 * from the changes since the baseline was built where its agent has tree.changes, else (an older
 * agent, or many moved directories) the full walk; contents read through the agent.
 */
async function guestTree(agent: AgentClient, seed: SeedImage, baseline: ManifestIndex, sinceNs: bigint): Promise<CurrentTree<ManifestEntry>> {
  const bytes = async (entry: ManifestEntry) => {
    const pieces: Buffer[] = [];
    try {
      for await (const piece of readFileChunks(agent, `${WORKSPACE_ROOT}/${entry.path}`, entry.size)) pieces.push(piece);
      return Buffer.concat(pieces);
    } catch (error) {
      // Gone (or replaced by a link) since the walk: a guest process is still busy; show what the walk saw.
      if (!isPyroError(error, "GUEST_OPERATION_FAILED") && !isPyroError(error, "PATH_OUTSIDE_WORKSPACE")) throw error;
      return undefined;
    }
  };
  let changed: ManifestEntry[];
  try {
    const { header, payload } = await agent.treeChanges(WORKSPACE_ROOT, sinceNs, MAX_MANIFEST_BYTES);
    changed = checkedChanges(agent, header.truncated === true, payload);
  } catch (error) {
    if (isPyroError(error, "GUEST_OPERATION_FAILED") && error.details.guestCode === "unknown_op")
      return { entries: await guestManifest(agent), ...heldWhole, bytes };
    throw error;
  }
  const rebuilt = await rebuildCurrentManifest(baseline, changed, sinceNs, {
    baselineInodes: async (paths) => {
      const found = new Map<string, number>();
      for (const path of paths) {
        const inode = seed.reader().lookup(path);
        if (inode) found.set(path, inode.ino);
      }
      return found;
    },
    fetchSubtree: async (dir) => [...(await guestManifest(agent, `${WORKSPACE_ROOT}/${dir}`))],
  });
  return { entries: rebuilt ?? (await guestManifest(agent)), ...heldWhole, bytes };
}

/** The current tree of /workspace and a way to read a changed file's bytes (at most DIFF_PAGE_LIMITS.fileBytes). */
interface CurrentTree<Kept = unknown> {
  entries: Iterable<ManifestEntry>;
  /** What a changed entry is held as until its page is shown, and its entry again from that. */
  keep(entry: ManifestEntry): Kept;
  entry(kept: Kept, path: string): ManifestEntry;
  /** The file's current bytes; undefined where it cannot be read any more. */
  bytes(entry: ManifestEntry): Promise<Buffer | undefined>;
}

/** A tree whose changed entries are held whole (the guest's: read once, never again). */
const heldWhole = { keep: (entry: ManifestEntry) => entry, entry: (kept: ManifestEntry) => kept };

/**
 * The walk of the disk copy. A changed entry is held as its inode number and read again for its
 * page (the copy does not change while the diff reads it), with its inode, so a changed file's
 * bytes are read without a lookup.
 */
function diskTree(reader: Ext4Reader): CurrentTree<number> {
  const root = reader.lookup("");
  if (!root) throw new PyroError("DISK_IMAGE_INVALID", "the workspace filesystem has no root directory");
  return {
    entries: reader.walk(root),
    keep: (entry) => entry.ino,
    entry: (ino, path) => reader.entry(path, reader.inode(ino)),
    bytes: async (entry) => reader.bytes((entry as Ext4Entry).inode),
  };
}

/** The seed image, opened on first use (a summary never reads it), read with the same reader as the disk. */
class SeedImage {
  private disk: DiskReader | undefined;
  private ext4: Ext4Reader | undefined;
  constructor(private readonly path: string) {}

  reader(): Ext4Reader {
    if (!this.ext4) {
      this.disk = openDisk(this.path);
      this.ext4 = Ext4Reader.open(this.disk);
    }
    return this.ext4;
  }

  /** The baseline bytes of the file at `path` (relative to /workspace); empty where the image no longer has it as a file. */
  bytes(path: string): Buffer {
    const inode = this.reader().lookup(path);
    return inode?.type === "f" ? this.reader().bytes(inode) : Buffer.alloc(0);
  }

  close(): void {
    this.disk?.close();
  }
}

export interface DiskDiffPage {
  changed: boolean;
  summary: { added: number; modified: number; deleted: number; binary: number | null };
  files: { path: string; status: Change["status"]; binary: boolean | null }[];
  patch: string;
  mode: "summary" | "patch";
  /** Changed entries in all (the summary's counts are over all of them). */
  total_files: number;
  offset: number;
  /** Where the next page starts; null on the last. */
  next_offset: number | null;
}

function pageBounds(options: DiffOptions): { offset: number; limit: number } {
  const max = options.summary ? DIFF_PAGE_LIMITS.summaryFiles : DIFF_PAGE_LIMITS.patchFiles;
  const offset = options.offset ?? 0;
  const limit = options.limit ?? max;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new PyroError("INVALID_ARGUMENT", `diff offset must be a non-negative integer, got ${offset}`);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > max) throw new PyroError("INVALID_ARGUMENT", `diff limit must be 1-${max}, got ${limit}`);
  return { offset, limit };
}

export async function diffWorkspaceDisk(
  ctx: WorkspaceContext,
  record: WorkspaceRecord,
  vm: RunningVm,
  redactor: Redactor,
  options: DiffOptions = {},
): Promise<DiskDiffPage> {
  const { offset, limit } = pageBounds(options);
  const builtAt = record.seed.built_at_ns;
  if (builtAt === null) throw new PyroError("GUEST_OPERATION_FAILED", `workspace ${record.id} has no baseline to diff against`);
  const since = BigInt(builtAt);
  const seed = new SeedImage(seedImagePath(ctx, record.id));
  const scratch = await makePrivateTempDir(ctx.store.dir(record.id), ".disk-");
  let disk: DiskReader | undefined;
  try {
    const top = join(scratch, "top.qcow2");
    // The baseline is indexed on the host while the guest freezes and the copy is made; both settle
    // before anything is read or removed (a copy still being written is never raced).
    const [copied, indexed] = await Promise.allSettled([
      copyTopLayerAtOneMoment(vm, workspaceDiskPath(ctx, record.id), top),
      // One index of the baseline serves the comparison (and the guest's rebuild; each parse keeps every name while it checks).
      readFile(baselineManifestPath(ctx, record.id)).then((baseline) => new ManifestIndex(baseline)),
    ]);
    if (copied.status === "rejected") throw copied.reason;
    if (indexed.status === "rejected") throw indexed.reason;
    const index = indexed.value;
    let current: CurrentTree;
    let changes: HeldChange<unknown>[];
    try {
      // The copy's backing files are the original's neighbours (the workspace's lower layers, read in place).
      disk = openDisk(top, { topDirectory: ctx.store.dir(record.id) });
      const tree = diskTree(Ext4Reader.open(disk));
      changes = heldChanges(index, tree.entries, since, tree.keep);
      current = tree as CurrentTree;
    } catch (error) {
      if (!isPyroError(error, "DISK_IMAGE_INVALID")) throw error;
      const tree = await guestTree(vm.agent, seed, index, since);
      changes = heldChanges(index, tree.entries, since, tree.keep);
      current = tree as CurrentTree;
    }
    return await diffPage(changes, index, current, seed, redactor, options, offset, limit);
  } finally {
    disk?.close();
    seed.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The page of `changes` the options ask for: paths and counts, or with their patches. */
async function diffPage(
  changes: HeldChange<unknown>[],
  index: ManifestIndex,
  current: CurrentTree,
  seed: SeedImage,
  redactor: Redactor,
  options: DiffOptions,
  offset: number,
  limit: number,
): Promise<DiskDiffPage> {
  const counts = { added: 0, modified: 0, deleted: 0 };
  for (const c of changes) counts[c.status]++;
  const page = changes.slice(offset, offset + limit);
  const base = { mode: options.summary ? ("summary" as const) : ("patch" as const), total_files: changes.length, offset };
  if (options.summary) {
    const next = offset + page.length < changes.length ? offset + page.length : null;
    return {
      ...base,
      changed: changes.length > 0,
      summary: { ...counts, binary: null },
      files: page.map((c) => ({ path: redactor.text(c.path), status: c.status, binary: null })),
      patch: "",
      next_offset: next,
    };
  }
  const files: DiskDiffPage["files"] = [];
  const parts: string[] = [];
  let bytes = 0;
  let taken = 0;
  let binary = 0;
  for (const held of page) {
    taken++;
    const change = changeOf(held, index, (kept, path) => current.entry(kept, path));
    const { a, b } = await bothSides(change, current, seed);
    // Rewritten with the same bytes (metadata changed only): nothing to show.
    if (
      a &&
      b &&
      a.type === b.type &&
      a.mode === b.mode &&
      a.linkpath === b.linkpath &&
      !a.tooLarge &&
      !b.tooLarge &&
      a.data &&
      b.data &&
      a.data.equals(b.data)
    )
      continue;
    const file = formatFileDiff(change.path, a, b, redactor);
    files.push({ path: file.path, status: file.status, binary: file.binary });
    if (file.binary) binary++;
    parts.push(file.patch);
    bytes += file.patch.length;
    if (bytes >= DIFF_PAGE_LIMITS.patchBytes) break;
  }
  const end = offset + taken;
  return { ...base, changed: changes.length > 0, summary: { ...counts, binary }, files, patch: parts.join(""), next_offset: end < changes.length ? end : null };
}

function treeEntry(entry: ManifestEntry, data: Buffer | undefined): TreeEntry {
  const type = entry.type === "f" ? "File" : entry.type === "l" ? "SymbolicLink" : entry.type === "d" ? "Directory" : "Other";
  return {
    type,
    mode: entry.mode,
    ...(data ? { data } : {}),
    ...(entry.type === "l" ? { linkpath: entry.target } : {}),
    ...(entry.type === "f" && entry.size > DIFF_PAGE_LIMITS.fileBytes ? { tooLarge: true } : {}),
  };
}

const wantsBytes = (e: ManifestEntry | undefined): e is ManifestEntry => e?.type === "f" && e.size <= DIFF_PAGE_LIMITS.fileBytes;

/** Both sides of one changed file: the baseline's from the seed image, the current one from `current`. */
async function bothSides(change: Change, current: CurrentTree, seed: SeedImage): Promise<{ a?: TreeEntry; b?: TreeEntry }> {
  const before = change.before;
  const after = change.after;
  return {
    ...(before ? { a: treeEntry(before, wantsBytes(before) ? seed.bytes(change.path) : undefined) } : {}),
    ...(after ? { b: treeEntry(after, wantsBytes(after) ? await current.bytes(after) : undefined) } : {}),
  };
}
