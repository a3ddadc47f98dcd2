import { isUtf8 } from "node:buffer";
import { PyroError } from "../errors.js";
import { type ManifestEntry, nameText, tooManyTreeEntries } from "../workspaces/tree-manifest.js";
import { TREE_MANIFEST_LIMITS } from "../workspaces/workspace-limits.js";
import { type JournalCopy, journalCopies, restoreEscaped } from "./jbd2-journal.js";
import type { DiskReader } from "./qcow2-reader.js";

/**
 * A read-only ext4 reader over a disk's bytes: the walk of a directory as the same records the
 * guest agent's `tree.manifest` returns (same order, same fields), and each file's contents. It
 * reads what a journal replay would leave (committed journal blocks take the place of their
 * filesystem blocks) without writing anything.
 *
 * The guest's root wrote every byte. Nothing read is trusted: every block number is checked
 * against the filesystem, every size against the disk, extent trees must be ordered (so they
 * cannot loop) and are bounded in depth and nodes, a directory met twice is a cycle, names with
 * '/' or NUL or a misplaced '.'/'..' are refused, and entry counts are held to
 * TREE_MANIFEST_LIMITS. A bad image ends in a DISK_IMAGE_INVALID PyroError, never a hang, an
 * unbounded allocation or a path outside the walked root.
 */

const SUPERBLOCK_OFFSET = 1024;
const EXT4_MAGIC = 0xef53;
const ROOT_INODE = 2;
const INCOMPAT = {
  compression: 0x1,
  filetype: 0x2,
  recover: 0x4,
  journalDev: 0x8,
  metaBg: 0x10,
  extents: 0x40,
  bit64: 0x80,
  mmp: 0x100,
  flexBg: 0x200,
  eaInode: 0x400,
  dirData: 0x1000,
  csumSeed: 0x2000,
  largeDir: 0x4000,
  inlineData: 0x8000,
  encrypt: 0x10000,
  casefold: 0x20000,
};
/** Incompatible features whose on-disk layout this reader understands (or that do not change what it reads). */
const READABLE_INCOMPAT =
  INCOMPAT.filetype |
  INCOMPAT.recover |
  INCOMPAT.extents |
  INCOMPAT.bit64 |
  INCOMPAT.mmp |
  INCOMPAT.flexBg |
  INCOMPAT.eaInode |
  INCOMPAT.csumSeed |
  INCOMPAT.largeDir |
  INCOMPAT.inlineData;
const COMPAT_HAS_JOURNAL = 0x4;
const FLAG_EXTENTS = 0x80000;
const FLAG_INLINE_DATA = 0x10000000;
const FLAG_ENCRYPT = 0x800;
const EXTENT_MAGIC = 0xf30a;
/** ext4's own bound on extent tree depth. */
const MAX_EXTENT_DEPTH = 5;
/** Longest path a walk yields, in bytes (Linux's PATH_MAX): deeper trees are refused, not walked forever. */
const MAX_PATH_BYTES = 4096;
const SYMLINK_MAX = 4096;
/** Group descriptor table bytes read at most (a 1 TiB disk of 128 MiB groups has 512 KiB). */
const MAX_DESCRIPTOR_BYTES = 16 * 1024 * 1024;
/**
 * The longest journal read, in blocks: mkfs.ext4's largest (what it makes for pyro's largest disk,
 * 1 TiB). The journal scan reads and checks each of its blocks, so a longer one is refused.
 */
const MAX_JOURNAL_BLOCKS = 262_144;
/**
 * Metadata blocks (inode tables, extent nodes) kept once read, in one slab allocated once: a walk of
 * 200k entries reads ~13k inode-table blocks, and a fresh Buffer for each (freed only by the
 * garbage collector) cost tens of MB of peak RSS.
 */
const METADATA_CACHE_BLOCKS = 256;

/** The manifest type of an inode's mode (i_mode & S_IFMT); undefined for a mode no file has. */
function typeOfMode(mode: number): ManifestEntry["type"] | undefined {
  switch (mode & 0xf000) {
    case 0x8000:
      return "f";
    case 0x4000:
      return "d";
    case 0xa000:
      return "l";
    case 0x1000: // FIFO
    case 0x2000: // character device
    case 0x6000: // block device
    case 0xc000: // socket
      return "o";
    default:
      return undefined;
  }
}

function invalid(why: string, details: Record<string, unknown> = {}): PyroError {
  return new PyroError(
    "DISK_IMAGE_INVALID",
    `the workspace filesystem is damaged or unsupported: ${why}; run fsck in the guest, or export a directory without the damaged entry`,
    details,
  );
}

/** An inode as this reader uses it. */
export interface Ext4Inode {
  ino: number;
  type: ManifestEntry["type"];
  /** Permission bits with setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  nlink: number;
  flags: number;
}

/** A run of a file's logical blocks: on disk at `physical`, or a hole (unwritten extents read as zeros too). */
interface BlockRun {
  logical: number;
  length: number;
  physical: number | undefined;
}

export interface Ext4WalkOptions {
  /** Entries beyond this fail the walk (default: TREE_MANIFEST_LIMITS.entries). */
  maxEntries?: number;
  /** "manifest" (default): the agent's walk order; "subtree": each directory's subtree right after it. */
  order?: "manifest" | "subtree";
}

/** An entry's manifest record and its inode (to read its contents). */
export type Ext4Entry = ManifestEntry & { inode: Ext4Inode };

/** A walked entry, and whether its name is UTF-8 (where it is not, the path shows its bytes with `\xNN` escapes). */
export type Ext4WalkEntry = Ext4Entry & { utf8Name: boolean };

/** A read-only ext4 filesystem on a disk. Synchronous: the disk is read from the host's page cache. */
export class Ext4Reader {
  readonly blockSize: number;
  readonly blocksCount: number;
  private readonly inodesCount: number;
  private readonly inodesPerGroup: number;
  private readonly inodeSize: number;
  private readonly inodeTables: number[];
  private readonly incompat: number;
  /** Cached metadata blocks: block number to slot (block `slot` of `slab`, also viewed as `slots[slot]`). */
  private readonly cache = new Map<number, number>();
  private slab: Buffer | undefined;
  private slots: Buffer[] | undefined;
  /** One block buffer for every directory block read (a directory's entries are copied out of it). */
  private directoryBlock: Buffer | undefined;
  /** Where a directory's names are gathered while its blocks are read. */
  private nameScratch = Buffer.allocUnsafe(1 << 16);

  private constructor(
    private readonly disk: DiskReader,
    sb: Buffer,
    /** Filesystem blocks whose newest committed copy is in the journal, and where that copy is. */
    private readonly journal: ReadonlyMap<number, { copy: JournalCopy; physical: number }> = new Map(),
  ) {
    const geometry = parseSuperblock(sb, disk.size);
    this.blockSize = geometry.blockSize;
    this.blocksCount = geometry.blocksCount;
    this.inodesCount = geometry.inodesCount;
    this.inodesPerGroup = geometry.inodesPerGroup;
    this.inodeSize = geometry.inodeSize;
    this.incompat = geometry.incompat;
    this.inodeTables = this.readInodeTables(geometry);
  }

  /** Opens the filesystem on `disk`, with its committed journal applied (read-only). */
  static open(disk: DiskReader): Ext4Reader {
    const sb = Buffer.alloc(1024);
    disk.readSync(sb, SUPERBLOCK_OFFSET);
    const unreplayed = new Ext4Reader(disk, sb);
    const compat = sb.readUInt32LE(0x5c);
    const journalInode = sb.readUInt32LE(0xe0);
    if (!(compat & COMPAT_HAS_JOURNAL)) return unreplayed;
    if (journalInode === 0) throw invalid("its journal is on another device");
    const journal = unreplayed.journalCopies(journalInode);
    if (journal.size === 0) return unreplayed;
    // The superblock and group descriptors may themselves be in the journal: read again through it.
    const sbBlock = Math.floor(SUPERBLOCK_OFFSET / unreplayed.blockSize);
    const within = SUPERBLOCK_OFFSET % unreplayed.blockSize;
    const logged = journal.get(sbBlock);
    const replayedSb = logged ? restoreEscaped(logged.copy, unreplayed.rawBlock(logged.physical)).subarray(within, within + 1024) : sb;
    const replayed = new Ext4Reader(disk, Buffer.from(replayedSb), journal);
    if (replayed.blockSize !== unreplayed.blockSize || replayed.blocksCount !== unreplayed.blocksCount || replayed.inodesCount !== unreplayed.inodesCount)
      throw invalid("its journal changes the filesystem's geometry");
    return replayed;
  }

  private readInodeTables(g: Geometry): number[] {
    const groups = Math.ceil((g.blocksCount - g.firstDataBlock) / g.blocksPerGroup);
    if (groups * g.inodesPerGroup < g.inodesCount) throw invalid(`${groups} groups of ${g.inodesPerGroup} inodes cannot hold ${g.inodesCount}`);
    const inodeGroups = Math.ceil(g.inodesCount / g.inodesPerGroup);
    if (inodeGroups * g.descSize > MAX_DESCRIPTOR_BYTES) throw invalid(`its ${inodeGroups} block groups are more than a workspace disk has`);
    const tables: number[] = [];
    const tableBlocks = Math.ceil((g.inodesPerGroup * g.inodeSize) / g.blockSize);
    const descriptors = Buffer.alloc(inodeGroups * g.descSize);
    this.readBlocks(g.firstDataBlock + 1, descriptors);
    for (let group = 0; group < inodeGroups; group++) {
      const at = group * g.descSize;
      const low = descriptors.readUInt32LE(at + 8);
      const high = g.descSize >= 64 ? descriptors.readUInt32LE(at + 0x28) : 0;
      const table = high * 2 ** 32 + low;
      if (table === 0 || table + tableBlocks > g.blocksCount) throw invalid(`group ${group}'s inode table (block ${table}) is outside the filesystem`);
      tables.push(table);
    }
    return tables;
  }

  /** The journal's committed copies, each with the disk block it is read from. */
  private journalCopies(ino: number): Map<number, { copy: JournalCopy; physical: number }> {
    const inode = this.inode(ino);
    const blocks = Math.floor(inode.size / this.blockSize);
    // The journal is a file of the filesystem, and no larger than mkfs makes one: its scan is bounded by both.
    if (blocks > Math.min(this.blocksCount, MAX_JOURNAL_BLOCKS))
      throw invalid(`its journal claims ${blocks} blocks, more than the filesystem's ${this.blocksCount} or the ${MAX_JOURNAL_BLOCKS} mkfs makes at most`);
    // Journal logical blocks to disk blocks, built once from its extents (in logical order: found by bisection).
    const runs = [...this.blockRuns(inode)];
    const physicalOf = (n: number): number => {
      let low = 0;
      let high = runs.length;
      while (low < high) {
        const mid = (low + high) >>> 1;
        if (runs[mid]!.logical + runs[mid]!.length <= n) low = mid + 1;
        else high = mid;
      }
      const r = runs[low];
      if (r && n >= r.logical && r.physical !== undefined) return r.physical + (n - r.logical);
      throw invalid(`journal block ${n} is not mapped`);
    };
    const copies = new Map<number, { copy: JournalCopy; physical: number }>();
    for (const [block, copy] of journalCopies((n) => this.rawBlock(physicalOf(n)), this.blockSize, blocks, this.blocksCount))
      copies.set(block, { copy, physical: physicalOf(copy.journalBlock) });
    return copies;
  }

  /** A block as on disk, uncached and not through the journal. */
  private rawBlock(n: number): Buffer {
    if (!Number.isSafeInteger(n) || n < 0 || n >= this.blocksCount) throw invalid(`block ${n} is outside the filesystem`);
    const out = Buffer.allocUnsafe(this.blockSize);
    this.disk.readSync(out, n * this.blockSize);
    return out;
  }

  /**
   * A metadata block (cached), as the journal's replay would leave it. The bytes are a view into the
   * cache's slab, valid only until the next metadata read: a caller that keeps them across another
   * read (a generator, between its yields) copies them.
   */
  private block(n: number): Buffer {
    return this.slots![this.cachedSlot(n)]!;
  }

  /** The cache slot holding block `n`, read into it if it is not there. */
  private cachedSlot(n: number): number {
    let slot = this.cache.get(n);
    if (slot === undefined) {
      if (!this.slab) {
        const slab = Buffer.allocUnsafe(METADATA_CACHE_BLOCKS * this.blockSize);
        this.slab = slab;
        this.slots = Array.from({ length: METADATA_CACHE_BLOCKS }, (_, i) => slab.subarray(i * this.blockSize, (i + 1) * this.blockSize));
      }
      if (this.cache.size >= METADATA_CACHE_BLOCKS) this.cache.clear();
      slot = this.cache.size;
      this.readBlocks(n, this.slots![slot]!);
      this.cache.set(n, slot);
    }
    return slot;
  }

  /** Fills `target` from consecutive blocks starting at `first` (whole blocks; the journal's copies where it has them). */
  private readBlocks(first: number, target: Buffer): void {
    const count = Math.ceil(target.length / this.blockSize);
    if (!Number.isSafeInteger(first) || first < 0 || first + count > this.blocksCount)
      throw invalid(`blocks ${first}-${first + count} are outside the filesystem`);
    this.disk.readSync(target, first * this.blockSize);
    if (this.journal.size === 0) return;
    for (let i = 0; i < count; i++) {
      const logged = this.journal.get(first + i);
      if (!logged) continue;
      const copy = restoreEscaped(logged.copy, this.rawBlock(logged.physical));
      copy.copy(target, i * this.blockSize, 0, Math.min(this.blockSize, target.length - i * this.blockSize));
    }
  }

  /** Where inode `ino`'s bytes start in the cache's slab (valid until the next metadata read). */
  private inodePosition(ino: number): number {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.inodesCount) throw invalid(`inode ${ino} does not exist`);
    const index = ino - 1;
    const group = Math.floor(index / this.inodesPerGroup);
    const offset = (index % this.inodesPerGroup) * this.inodeSize;
    return this.cachedSlot(this.inodeTables[group]! + Math.floor(offset / this.blockSize)) * this.blockSize + (offset % this.blockSize);
  }

  /**
   * Reads and checks inode `ino`. Only numbers are kept, no view of its block: a walk's entries
   * outlive the cache, and the block map is read again where a file's contents are wanted.
   */
  inode(ino: number): Ext4Inode {
    const at = this.inodePosition(ino);
    const block = this.slab!;
    const rawMode = block.readUInt16LE(at);
    const type = typeOfMode(rawMode);
    const nlink = block.readUInt16LE(at + 0x1a);
    if (!type || nlink === 0) throw invalid(`inode ${ino} is named by a directory but is not in use`, { inode: ino });
    const size = block.readUInt32LE(at + 0x6c) * 2 ** 32 + block.readUInt32LE(at + 0x4);
    if (!Number.isSafeInteger(size)) throw invalid(`inode ${ino} claims ${size} bytes`, { inode: ino });
    const extra = this.inodeSize > 128 ? block.readUInt16LE(at + 0x80) : 0;
    if (extra > this.inodeSize - 128 || extra % 4 !== 0) throw invalid(`inode ${ino}'s extra size ${extra} is out of range`, { inode: ino });
    return {
      ino,
      type,
      mode: rawMode & 0o7777,
      size,
      mtimeNs: inodeTime(block, at, extra, 0x10, 0x88),
      ctimeNs: inodeTime(block, at, extra, 0xc, 0x84),
      nlink,
      flags: block.readUInt32LE(at + 0x20),
    };
  }

  /** The inode's 60-byte block map / extent root / fast symlink target: a view, valid until the next metadata read. */
  private blockArea(inode: Ext4Inode): Buffer {
    const at = this.inodePosition(inode.ino);
    return this.slab!.subarray(at + 0x28, at + 0x28 + 60);
  }

  /**
   * The runs of `inode`'s blocks in logical order, up to its size. `walk`, where given, is the
   * budget of a whole walk: the map's own blocks (extent nodes, indirect tables) are charged to it,
   * so directories sharing one deep map cannot each cost the walk a filesystem's worth of steps.
   */
  private blockRuns(inode: Ext4Inode, walk?: DirectoryBudget): Iterable<BlockRun> {
    const fileBlocks = Math.ceil(inode.size / this.blockSize);
    if (fileBlocks === 0) return [];
    if (inode.flags & FLAG_INLINE_DATA) throw invalid(`inode ${inode.ino} keeps its data inline, which pyro does not read`, { inode: inode.ino });
    if (inode.flags & FLAG_ENCRYPT) throw invalid(`inode ${inode.ino} is encrypted`, { inode: inode.ino });
    return inode.flags & FLAG_EXTENTS ? this.extentRuns(inode, fileBlocks, walk) : this.indirectRuns(inode, fileBlocks, walk);
  }

  /**
   * Walks an extent tree in logical order. Entries must be strictly ordered and below their
   * parent's next key, and depth must fall by one per level: a tree cannot loop, and the nodes
   * read are bounded by the file's own block count. A tree held in the inode alone (most files)
   * is read as a list, without generators.
   */
  private extentRuns(inode: Ext4Inode, fileBlocks: number, walk: DirectoryBudget | undefined): Iterable<BlockRun> {
    // An honest tree has fewer nodes than the file has blocks, and than the filesystem has.
    const state = { nextLogical: 0, budget: Math.min(fileBlocks, this.blocksCount) + 64 };
    const area = this.blockArea(inode);
    const root = this.extentNode(inode, area, undefined);
    if (root.depth === 0) return this.leafRuns(inode, area, root.entries, 2 ** 32, fileBlocks, state);
    const self = this;
    function* node(bytes: Buffer, entries: number, depth: number, limit: number): Generator<BlockRun> {
      for (let i = 0; i < entries; i++) {
        const { at, first, following } = extentEntry(inode, bytes, i, entries, limit, state.nextLogical);
        if (first >= fileBlocks) return;
        if (--state.budget < 0) throw invalid(`inode ${inode.ino}'s extent tree has more nodes than blocks`, { inode: inode.ino });
        spend(walk, 1);
        const childBytes = self.block(bytes.readUInt16LE(at + 8) * 2 ** 32 + bytes.readUInt32LE(at + 4));
        const child = self.extentNode(inode, childBytes, depth - 1);
        // A leaf is read into a list at once; an index node is kept across yields, so copied out of the cache.
        if (child.depth === 0) yield* self.leafRuns(inode, childBytes, child.entries, following, fileBlocks, state);
        else yield* node(Buffer.from(childBytes), child.entries, child.depth, following);
      }
    }
    return node(Buffer.from(area), root.entries, root.depth, 2 ** 32);
  }

  /** An extent node's header, checked (`expectedDepth`: one less than its parent's). */
  private extentNode(inode: Ext4Inode, bytes: Buffer, expectedDepth: number | undefined): { entries: number; depth: number } {
    const entries = bytes.readUInt16LE(2);
    const max = bytes.readUInt16LE(4);
    const depth = bytes.readUInt16LE(6);
    if (
      bytes.readUInt16LE(0) !== EXTENT_MAGIC ||
      entries > max ||
      12 + max * 12 > bytes.length ||
      depth > MAX_EXTENT_DEPTH ||
      (expectedDepth !== undefined && depth !== expectedDepth)
    )
      throw invalid(`inode ${inode.ino}'s extent tree is damaged`, { inode: inode.ino });
    return { entries, depth };
  }

  /** A leaf's extents (at most a block's worth), checked and clipped to the file. */
  private leafRuns(inode: Ext4Inode, bytes: Buffer, entries: number, limit: number, fileBlocks: number, state: { nextLogical: number }): BlockRun[] {
    const runs: BlockRun[] = [];
    for (let i = 0; i < entries; i++) {
      const { at, first, following } = extentEntry(inode, bytes, i, entries, limit, state.nextLogical);
      if (first >= fileBlocks) break;
      let length = bytes.readUInt16LE(at + 4);
      const unwritten = length > 32768;
      if (unwritten) length -= 32768;
      const physical = bytes.readUInt16LE(at + 6) * 2 ** 32 + bytes.readUInt32LE(at + 8);
      if (length === 0 || first + length > following || physical + length > this.blocksCount || physical === 0)
        throw invalid(`inode ${inode.ino} has an extent outside the filesystem`, { inode: inode.ino });
      state.nextLogical = first + length;
      runs.push({ logical: first, length: Math.min(length, fileBlocks - first), physical: unwritten ? undefined : physical });
    }
    return runs;
  }

  /** Old-style block maps: 12 direct blocks, then single, double and triple indirect blocks (zero: a hole). */
  private *indirectRuns(inode: Ext4Inode, fileBlocks: number, walk: DirectoryBudget | undefined): Generator<BlockRun> {
    const perBlock = this.blockSize / 4;
    let logical = 0;
    const self = this;
    function* mapped(pointer: number, level: number): Generator<BlockRun> {
      const span = perBlock ** level;
      if (pointer === 0) {
        const length = Math.min(span, fileBlocks - logical);
        yield { logical, length, physical: undefined };
        logical += length;
        return;
      }
      if (pointer >= self.blocksCount) throw invalid(`inode ${inode.ino} maps a block outside the filesystem`, { inode: inode.ino });
      if (level === 0) {
        yield { logical, length: 1, physical: pointer };
        logical++;
        return;
      }
      spend(walk, 1);
      const table = Buffer.from(self.block(pointer));
      for (let i = 0; i < perBlock && logical < fileBlocks; i++) yield* mapped(table.readUInt32LE(i * 4), level - 1);
    }
    const area = Buffer.from(this.blockArea(inode));
    for (let i = 0; i < 15 && logical < fileBlocks; i++) yield* mapped(area.readUInt32LE(i * 4), i < 12 ? 0 : i - 11);
  }

  /**
   * A file's whole bytes (holes as zeros) in a buffer of its size, for callers that bound the size
   * first (diff's pages).
   */
  bytes(inode: Ext4Inode): Buffer {
    return this.wholeFile(inode, undefined);
  }

  /** `bytes`, with the file's map charged to a walk's budget where given. */
  private wholeFile(inode: Ext4Inode, walk: DirectoryBudget | undefined): Buffer {
    const out = Buffer.alloc(inode.size);
    this.readerOf(inode, walk)(out);
    return out;
  }

  /** The record a walk gives `inode` named `path` (a symlink's target read): an entry read again after its walk. */
  entry(path: string, inode: Ext4Inode): Ext4Entry {
    return this.entryOf(path, inode, undefined);
  }

  /** `entry`, with a slow symlink's map charged to a walk's budget where given. */
  private entryOf(path: string, inode: Ext4Inode, walk: DirectoryBudget | undefined): Ext4Entry {
    const { ino, type, mode, size, mtimeNs, ctimeNs, nlink } = inode;
    const target = type === "l" ? nameText(this.symlinkTarget(inode, walk)) : "";
    return { path, type, mode, size, mtimeNs, ctimeNs, ino, nlink, target, inode };
  }

  /**
   * A symlink's target bytes (fast symlinks keep it in the inode). In a walk, a slow symlink's map
   * (extent nodes, block map tables) is charged to the walk's budget, as directories' are: many
   * symlinks sharing one deep map cost its blocks once.
   */
  private symlinkTarget(inode: Ext4Inode, walk: DirectoryBudget | undefined): Buffer {
    if (inode.size === 0 || inode.size > SYMLINK_MAX) throw invalid(`symlink inode ${inode.ino} has a ${inode.size}-byte target`, { inode: inode.ino });
    const fast = !(inode.flags & (FLAG_EXTENTS | FLAG_INLINE_DATA)) && inode.size < 60;
    const target = fast ? Buffer.from(this.blockArea(inode).subarray(0, inode.size)) : this.wholeFile(inode, walk);
    // No link Linux makes holds a NUL: a tar would keep the target only up to it (diff and export would disagree).
    if (target.includes(0)) throw invalid(`symlink inode ${inode.ino}'s target holds a NUL byte`, { inode: inode.ino });
    return target;
  }

  /**
   * A directory's entries in on-disk order, checked; '.' and '..' left out. More than `room`
   * entries fail as a tree over `limit` (the walk's whole bound, of which `room` is what is left);
   * more than `nameRoom` bytes of names fail as names over TREE_MANIFEST_LIMITS.bytes.
   */
  private directoryEntries(
    dir: Ext4Inode,
    room: number,
    budget: DirectoryBudget,
    limit = room,
    nameRoom: number = TREE_MANIFEST_LIMITS.bytes,
  ): DirectoryListing {
    const bounds: number[] = [0];
    const inos: number[] = [];
    let used = 0;
    let plain = true;
    const hasFileType = (this.incompat & INCOMPAT.filetype) !== 0;
    const where = () => `directory inode ${dir.ino}`;
    if (dir.size > this.disk.size || dir.size % this.blockSize !== 0) throw invalid(`${where()} claims ${dir.size} bytes`, { inode: dir.ino });
    this.directoryBlock ??= Buffer.allocUnsafe(this.blockSize);
    const block = this.directoryBlock;
    for (const run of this.blockRuns(dir, budget)) {
      // A hole holds no entries, but is charged like blocks: each of its blocks was a step.
      if (run.physical === undefined) {
        spend(budget, run.length);
        continue;
      }
      for (let i = 0; i < run.length; i++) {
        // Real directories never share blocks: a walk reads at most the filesystem's blocks, however its directories point.
        spend(budget, 1);
        const blockIndex = run.logical + i;
        this.readBlocks(run.physical + i, block);
        for (let at = 0, index = 0; at < block.length; index++) {
          if (at + 8 > block.length) throw invalid(`${where()} has a damaged entry`, { inode: dir.ino });
          const ino = block.readUInt32LE(at);
          let recLen = block[at + 4]! | (block[at + 5]! << 8);
          if (this.blockSize >= 65536 && (recLen === 0 || recLen === 65535)) recLen = this.blockSize;
          const nameLen = hasFileType ? block[at + 6]! : block[at + 6]! | (block[at + 7]! << 8);
          if (recLen < 8 || recLen % 4 !== 0 || at + recLen > block.length || (ino !== 0 && 8 + nameLen > recLen))
            throw invalid(`${where()} has a damaged entry`, { inode: dir.ino });
          if (ino !== 0) {
            const start = at + 8;
            const dots = (nameLen === 1 || nameLen === 2) && block[start] === 0x2e && (nameLen === 1 || block[start + 1] === 0x2e);
            if (dots) {
              // '.' and '..' are the first two entries of the first block, and nowhere else.
              if (blockIndex !== 0 || index !== nameLen - 1) throw invalid(`${where()} lists '${".".repeat(nameLen)}' out of place`, { inode: dir.ino });
            } else {
              let clean = nameLen > 0;
              for (let i = start; clean && i < start + nameLen; i++) {
                clean = block[i] !== 0 && block[i] !== 0x2f;
                if (block[i]! >= 0x80) plain = false;
              }
              if (!clean) throw invalid(`${where()} holds a name with '/' or NUL`, { inode: dir.ino });
              if (ino > this.inodesCount) throw invalid(`${where()} names inode ${ino}, which does not exist`, { inode: dir.ino });
              if (inos.length >= room) throw tooManyTreeEntries(limit);
              if (used + nameLen > nameRoom) throw tooManyNameBytes();
              if (used + nameLen > this.nameScratch.length) {
                const grown = Buffer.allocUnsafe(this.nameScratch.length * 2);
                this.nameScratch.copy(grown, 0, 0, used);
                this.nameScratch = grown;
              }
              block.copy(this.nameScratch, used, start, start + nameLen);
              used += nameLen;
              bounds.push(used);
              inos.push(ino);
            }
          }
          at += recLen;
        }
      }
    }
    return { names: Buffer.from(this.nameScratch.subarray(0, used)), bounds, inos, plain };
  }

  /** Directory blocks a walk or lookup may read: the filesystem's own block count. */
  private directoryBudget(): DirectoryBudget {
    return { blocks: this.blocksCount };
  }

  /**
   * The inode at `path` (relative to the root, '/'-separated, no symlink followed); undefined if a
   * component is missing or a non-directory is on the way.
   */
  lookup(path: string): Ext4Inode | undefined {
    let current = this.inode(ROOT_INODE);
    const budget = this.directoryBudget();
    for (const part of path.split("/").filter((p) => p !== "" && p !== ".")) {
      if (current.type !== "d") return undefined;
      const wanted = Buffer.from(part, "utf8");
      const { names, bounds, inos } = this.directoryEntries(current, TREE_MANIFEST_LIMITS.entries, budget);
      const found = inos.findIndex((_, i) => names.compare(wanted, 0, wanted.length, bounds[i], bounds[i + 1]) === 0);
      if (found < 0) return undefined;
      current = this.inode(inos[found]!);
    }
    return current;
  }

  /**
   * Walks the directory `root`; the root itself is not listed and paths are relative to it. Order
   * "manifest" (the default) is the agent's `tree.manifest`: depth first, each directory's entries
   * together in byte order of their names, after the directory's own record. Order "subtree" puts
   * each directory's whole subtree right after its record (what tar wants: an extractor sets a
   * directory's time once it has left it).
   */
  *walk(root: Ext4Inode, options: Ext4WalkOptions = {}): Generator<Ext4WalkEntry> {
    const maxEntries = options.maxEntries ?? TREE_MANIFEST_LIMITS.entries;
    const subtree = options.order === "subtree";
    if (root.type !== "d") throw invalid(`inode ${root.ino} is not a directory`);
    const visited = new Set<number>([root.ino]);
    const budget = this.directoryBudget();
    // Entries listed so far, yielded or not: every entry is listed before it is yielded, so this
    // bound is the walk's entry bound too. In "subtree" order each directory on the stack keeps
    // its listing while its subtree is walked: bounding yielded entries alone let a chain of
    // directories each listing ~maxEntries hold that many times maxEntries at once.
    let listed = 0;
    // Their names' bytes, held to the agent's manifest bound (its records hold whole paths, so
    // more): 500k names of 255 bytes were ~130 MB, held twice while a listing was copied out.
    let listedNameBytes = 0;
    type Frame = { inode: Ext4Inode; path: string; bytes: number; listing?: DirectoryListing; order?: number[]; next: number };
    const stack: Frame[] = [{ inode: root, path: "", bytes: 0, next: 0 }];
    while (stack.length) {
      const dir = stack.pop()!;
      if (!dir.listing) {
        const listing = this.directoryEntries(dir.inode, maxEntries - listed, budget, maxEntries, TREE_MANIFEST_LIMITS.bytes - listedNameBytes);
        listed += listing.inos.length;
        listedNameBytes += listing.names.length;
        const { names, bounds, inos } = listing;
        dir.listing = listing;
        dir.order = inos.map((_, i) => i).sort((a, b) => names.compare(names, bounds[b], bounds[b + 1], bounds[a], bounds[a + 1]));
        // A name that is not UTF-8 is shown with `\xNN` escapes, which another name can spell: two
        // entries would have one path (a symlink and a directory under it, in an export's tar).
        if (!listing.plain && inos.some((_, i) => !isUtf8(names.subarray(bounds[i], bounds[i + 1])))) {
          const shown = new Set<string>();
          for (let i = 0; i < inos.length; i++) {
            const text = nameText(names.subarray(bounds[i], bounds[i + 1]));
            if (shown.has(text))
              throw invalid(`directory inode ${dir.inode.ino} holds two names shown as '${text}' (one of them not UTF-8)`, { inode: dir.inode.ino });
            shown.add(text);
          }
        }
      }
      const { names, bounds, inos, plain } = dir.listing;
      const order = dir.order!;
      const subdirs: Frame[] = [];
      while (dir.next < order.length) {
        const at = dir.next++;
        const i = order[at]!;
        const start = bounds[i]!;
        const end = bounds[i + 1]!;
        const ino = inos[i]!;
        if (at > 0 && names.compare(names, bounds[order[at - 1]!], bounds[order[at - 1]! + 1], start, end) === 0)
          throw invalid(`directory inode ${dir.inode.ino} lists '${nameText(names.subarray(start, end))}' twice`, { inode: dir.inode.ino });
        const bytes = dir.bytes + (dir.bytes ? 1 : 0) + (end - start);
        if (bytes > MAX_PATH_BYTES) throw invalid(`a path under ${dir.path || "the root"} is longer than ${MAX_PATH_BYTES} bytes`);
        // ASCII names (most) become text without a view of their bytes.
        const utf8Name = plain || isUtf8(names.subarray(start, end));
        const text = plain ? names.toString("latin1", start, end) : nameText(names.subarray(start, end));
        const path = dir.path ? `${dir.path}/${text}` : text;
        const inode = this.inode(ino);
        // Marked on the record itself: a walk of 200k entries makes no second object for each.
        const entry = this.entryOf(path, inode, budget) as Ext4WalkEntry;
        entry.utf8Name = utf8Name;
        yield entry;
        if (inode.type !== "d") continue;
        if (visited.has(ino)) throw invalid(`directory inode ${ino} is linked from two places (a cycle)`, { inode: ino });
        visited.add(ino);
        const child: Frame = { inode, path, bytes, next: 0 };
        if (subtree) {
          // This directory resumes after the child's subtree.
          stack.push(dir, child);
          break;
        }
        subdirs.push(child);
      }
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }

  /**
   * A reader of a file's bytes from 0 to its size (holes as zeros) into buffers the caller owns:
   * each call fills a prefix of `target` with the next bytes and returns its length. The prefix
   * is whole blocks unless the file ends in it, so 0 (with bytes left) means `target` is smaller
   * than a block. An export reads straight into its output buffer: no piece buffer, no copy.
   */
  contentReader(inode: Ext4Inode): (target: Buffer) => number {
    return this.readerOf(inode, undefined);
  }

  /**
   * `contentReader`, with the file's map charged to a walk's budget where given: every read of a
   * file's bytes (export's stream, diff's whole files, slow symlinks' targets) goes through it.
   */
  private readerOf(inode: Ext4Inode, walk: DirectoryBudget | undefined): (target: Buffer) => number {
    const runs = this.blockRuns(inode, walk)[Symbol.iterator]();
    const { blockSize } = this;
    const size = inode.size;
    let run: BlockRun | undefined;
    let runEnd = 0;
    let position = 0;
    return (target) => {
      let filled = 0;
      while (position < size) {
        while (position >= runEnd) {
          const next = runs.next();
          run = next.done ? undefined : next.value;
          // Past the last run, the rest of the file is a hole.
          runEnd = run ? Math.min(size, (run.logical + run.length) * blockSize) : size;
        }
        const runStart = run ? run.logical * blockSize : size;
        const beforeRun = position < runStart;
        const end = beforeRun ? runStart : runEnd;
        const room = target.length - filled;
        // Whole blocks, unless the file's last bytes fit.
        const length = end === size && end - position <= room ? end - position : Math.min(end - position, room - (room % blockSize));
        if (length <= 0) break;
        const piece = target.subarray(filled, filled + length);
        if (beforeRun || run?.physical === undefined) piece.fill(0);
        else this.readBlocks(run.physical + (position - runStart) / blockSize, piece);
        filled += length;
        position += length;
      }
      return filled;
    };
  }
}

function tooManyNameBytes(): PyroError {
  return new PyroError(
    "GUEST_OPERATION_FAILED",
    `the tree's names hold more than ${TREE_MANIFEST_LIMITS.bytes} bytes, more than pyro diffs or exports at once; export a subdirectory, or remove files`,
  );
}

interface DirectoryBudget {
  blocks: number;
}

/**
 * A directory's entries without an object per entry: their names packed in one buffer, entry i's
 * name at names[bounds[i], bounds[i + 1]) (names are packed end to end), its inode inos[i].
 * `plain`: every name is ASCII.
 */
interface DirectoryListing {
  names: Buffer;
  bounds: number[];
  inos: number[];
  plain: boolean;
}

/**
 * An inode time in nanoseconds: the 32-bit seconds at `field`, and where the inode's extra space
 * (`extra` bytes) holds it, the epoch bits and nanoseconds at `extraField`.
 */
function inodeTime(bytes: Buffer, inode: number, extra: number, field: number, extraField: number): bigint {
  const seconds = bytes.readInt32LE(inode + field);
  if (128 + extra < extraField + 4) return BigInt(seconds) * 1_000_000_000n;
  const x = bytes.readUInt32LE(inode + extraField);
  const nanos = x >>> 2;
  return BigInt(seconds + (x & 3) * 2 ** 32) * 1_000_000_000n + BigInt(nanos > 999_999_999 ? 0 : nanos);
}

/**
 * Entry `i` of an extent node (index or leaf): where it lies, its first logical block and the next
 * entry's (or the parent's `limit`), checked to come after everything before it (`nextLogical`).
 */
function extentEntry(
  inode: Ext4Inode,
  bytes: Buffer,
  i: number,
  entries: number,
  limit: number,
  nextLogical: number,
): { at: number; first: number; following: number } {
  const at = 12 + i * 12;
  const first = bytes.readUInt32LE(at);
  const following = i + 1 < entries ? bytes.readUInt32LE(at + 12) : limit;
  if (first < nextLogical || first >= following) throw invalid(`inode ${inode.ino}'s extents are out of order`, { inode: inode.ino });
  return { at, first, following };
}

/** Charges `blocks` to a walk's budget (none: not walking). */
function spend(budget: DirectoryBudget | undefined, blocks: number): void {
  if (!budget) return;
  budget.blocks -= blocks;
  if (budget.blocks < 0) throw invalid("its directories and symlinks hold more blocks than the filesystem");
}

interface Geometry {
  blockSize: number;
  blocksCount: number;
  firstDataBlock: number;
  blocksPerGroup: number;
  inodesCount: number;
  inodesPerGroup: number;
  inodeSize: number;
  descSize: number;
  incompat: number;
}

/** Checks a superblock's numbers against each other and the disk before any is used. */
function parseSuperblock(sb: Buffer, diskBytes: number): Geometry {
  if (sb.readUInt16LE(0x38) !== EXT4_MAGIC) throw invalid("it has no ext4 superblock");
  const logBlock = sb.readUInt32LE(0x18);
  if (logBlock > 6) throw invalid(`its block size (2^${10 + logBlock}) is out of range`);
  const blockSize = 1024 << logBlock;
  const incompat = sb.readUInt32LE(0x60);
  if (incompat & ~READABLE_INCOMPAT)
    throw invalid(`it uses features pyro does not read (incompatible features 0x${(incompat & ~READABLE_INCOMPAT).toString(16)})`);
  const is64 = (incompat & INCOMPAT.bit64) !== 0;
  const blocksCount = sb.readUInt32LE(0x4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = sb.readUInt32LE(0x14);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  const inodesCount = sb.readUInt32LE(0x0);
  const inodesPerGroup = sb.readUInt32LE(0x28);
  const revision = sb.readUInt32LE(0x4c);
  const inodeSize = revision === 0 ? 128 : sb.readUInt16LE(0x58);
  const descSize = is64 ? sb.readUInt16LE(0xfe) : 32;
  if (blocksCount === 0 || blocksCount * blockSize > diskBytes)
    throw invalid(`it claims ${blocksCount} blocks of ${blockSize} bytes, more than its ${diskBytes}-byte disk`);
  if (firstDataBlock !== (blockSize === 1024 ? 1 : 0)) throw invalid(`its first data block ${firstDataBlock} is wrong for ${blockSize}-byte blocks`);
  if (blocksPerGroup === 0 || blocksPerGroup > 8 * blockSize) throw invalid(`${blocksPerGroup} blocks per group is out of range`);
  if (inodesPerGroup === 0 || inodesPerGroup > 8 * blockSize || inodesCount < ROOT_INODE)
    throw invalid(`its inode counts (${inodesCount}, ${inodesPerGroup} per group) are out of range`);
  if (inodeSize < 128 || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) throw invalid(`inode size ${inodeSize} is out of range`);
  if (descSize < 32 || descSize > 1024 || (descSize & (descSize - 1)) !== 0) throw invalid(`group descriptor size ${descSize} is out of range`);
  return { blockSize, blocksCount, firstDataBlock, blocksPerGroup, inodesCount, inodesPerGroup, inodeSize, descSize, incompat };
}
