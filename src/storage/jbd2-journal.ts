import { PyroError } from "../errors.js";

/**
 * What an ext4 journal (JBD2) holds that the filesystem has not yet written in place: the newest
 * committed copy of each block, as a map from filesystem block to journal block. A reader that
 * reads those blocks from the journal sees the filesystem a replay (or the guest's own next mount)
 * would, without writing anything. The guest's root wrote every byte: the scan is bounded by the
 * journal's length, and every number is checked before it is used.
 */

const JBD2_MAGIC = 0xc03b3998;
const DESCRIPTOR = 1;
const COMMIT = 2;
const SUPERBLOCK_V1 = 3;
const SUPERBLOCK_V2 = 4;
const REVOKE = 5;
const INCOMPAT_REVOKE = 0x1;
const INCOMPAT_64BIT = 0x2;
const INCOMPAT_ASYNC_COMMIT = 0x4;
const INCOMPAT_CSUM_V2 = 0x8;
const INCOMPAT_CSUM_V3 = 0x10;
const INCOMPAT_FAST_COMMIT = 0x20;
const KNOWN_INCOMPAT = INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3 | INCOMPAT_FAST_COMMIT;
const TAG_ESCAPE = 0x1;
const TAG_SAME_UUID = 0x2;
const TAG_LAST = 0x8;
/** The largest journal mke2fs makes by default (1 GiB); longer ones are refused, which bounds the scan. */
const MAX_JOURNAL_BYTES = 2 ** 30;

/** A journal block holding a filesystem block's newest committed copy. */
export interface JournalCopy {
  journalBlock: number;
  /** The copy's first four bytes were the journal magic, which JBD2 zeroes when it logs a block: put back on reading. */
  escaped: boolean;
}

function invalid(why: string): PyroError {
  return new PyroError("DISK_IMAGE_INVALID", `the workspace filesystem's journal cannot be read: ${why}`);
}

/**
 * The committed, not yet checkpointed blocks of a journal. `readBlock(n)` returns journal block n
 * (its logical block, `blockSize` bytes); `filesystemBlocks` bounds the block numbers it may name.
 */
export function journalCopies(readBlock: (n: number) => Buffer, blockSize: number, journalBlocks: number, filesystemBlocks: number): Map<number, JournalCopy> {
  const copies = new Map<number, JournalCopy>();
  if (journalBlocks < 2) throw invalid(`it is ${journalBlocks} blocks long`);
  const sb = readBlock(0);
  if (sb.readUInt32BE(0) !== JBD2_MAGIC) throw invalid("its superblock has no JBD2 magic");
  const sbType = sb.readUInt32BE(4);
  if (sbType !== SUPERBLOCK_V1 && sbType !== SUPERBLOCK_V2) throw invalid(`its superblock type ${sbType} is unknown`);
  if (sb.readUInt32BE(12) !== blockSize) throw invalid(`its block size ${sb.readUInt32BE(12)} is not the filesystem's ${blockSize}`);
  const maxLen = sb.readUInt32BE(16);
  const first = sb.readUInt32BE(20);
  let sequence = sb.readUInt32BE(24);
  const start = sb.readUInt32BE(28);
  if (start === 0) return copies; // clean: everything is in place
  if (maxLen * blockSize > MAX_JOURNAL_BYTES) throw invalid(`it is ${maxLen} blocks long, more than pyro reads`);
  if (maxLen > journalBlocks || first < 1 || first >= maxLen || start < first || start >= maxLen)
    throw invalid(`its bounds (first ${first}, start ${start}, length ${maxLen}) do not fit its ${journalBlocks} blocks`);
  const incompat = sbType === SUPERBLOCK_V2 ? sb.readUInt32BE(0x28) : 0;
  if (incompat & ~KNOWN_INCOMPAT) throw invalid(`it uses unknown features (0x${incompat.toString(16)})`);
  if (incompat & INCOMPAT_FAST_COMMIT) throw invalid("it holds fast commits, which pyro does not replay");
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const csum3 = (incompat & INCOMPAT_CSUM_V3) !== 0;
  const csum2 = (incompat & INCOMPAT_CSUM_V2) !== 0;
  const tagBytes = csum3 ? 16 : 8 + (csum2 ? 2 : 0) + (is64 ? 4 : 0);
  const tailBytes = csum2 || csum3 ? 4 : 0;
  const ring = maxLen - first;
  const wrap = (n: number) => (n >= maxLen ? first + (n - maxLen) : n);

  // One pass over the log: tags of committed transactions in order, and the revoke table.
  const committed: { block: number; copy: JournalCopy; sequence: number }[] = [];
  const revoked = new Map<number, number>();
  let pending: { block: number; copy: JournalCopy }[] = [];
  // A set, of blocks inside the filesystem only: a log of revoke blocks naming one block over and over holds it once.
  let pendingRevokes = new Set<number>();
  let at = start;
  for (let scanned = 0; scanned < ring; ) {
    const block = readBlock(at);
    scanned++;
    if (block.readUInt32BE(0) !== JBD2_MAGIC || block.readUInt32BE(8) !== sequence) break;
    const type = block.readUInt32BE(4);
    let next = wrap(at + 1);
    if (type === DESCRIPTOR) {
      for (let t = 12; t + tagBytes <= blockSize - tailBytes; ) {
        const low = block.readUInt32BE(t);
        const flags = csum3 ? block.readUInt32BE(t + 4) : block.readUInt16BE(t + 6);
        const high = is64 ? block.readUInt32BE(csum3 ? t + 8 : t + 8) : 0;
        const target = high * 2 ** 32 + low;
        if (scanned >= ring) throw invalid("a transaction is longer than the journal");
        if (target >= filesystemBlocks) throw invalid(`a logged block (${target}) is outside the filesystem`);
        pending.push({ block: target, copy: { journalBlock: next, escaped: (flags & TAG_ESCAPE) !== 0 } });
        next = wrap(next + 1);
        scanned++;
        t += tagBytes + ((flags & TAG_SAME_UUID) === 0 ? 16 : 0);
        if (flags & TAG_LAST) break;
      }
    } else if (type === REVOKE) {
      const used = block.readUInt32BE(12);
      const record = is64 ? 8 : 4;
      if (used < 16 || used > blockSize - tailBytes) throw invalid(`a revoke block claims ${used} bytes`);
      for (let r = 16; r + record <= used; r += record) {
        const revokedBlock = is64 ? Number(block.readBigUInt64BE(r)) : block.readUInt32BE(r);
        if (revokedBlock < filesystemBlocks) pendingRevokes.add(revokedBlock);
      }
    } else if (type === COMMIT) {
      for (const p of pending) committed.push({ ...p, sequence });
      for (const b of pendingRevokes) revoked.set(b, sequence);
      pending = [];
      pendingRevokes = new Set();
      sequence = (sequence + 1) >>> 0;
    } else break;
    at = next;
  }
  // Later transactions replace earlier copies; a revoke cancels copies from its own and earlier transactions.
  for (const c of committed) {
    const revokedAt = revoked.get(c.block);
    if (revokedAt !== undefined && ((revokedAt - c.sequence) | 0) >= 0) continue;
    copies.set(c.block, c.copy);
  }
  return copies;
}

/** A logged copy's bytes as the filesystem block they stand for (the escaped magic restored). */
export function restoreEscaped(copy: JournalCopy, bytes: Buffer): Buffer {
  if (copy.escaped) bytes.writeUInt32BE(JBD2_MAGIC, 0);
  return bytes;
}
