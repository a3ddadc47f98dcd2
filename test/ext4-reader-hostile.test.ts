import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, openSync, writeSync } from "node:fs";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { findExecutable } from "../src/process/host-command.js";
import { Ext4Reader } from "../src/storage/ext4-reader.js";
import { openDisk } from "../src/storage/qcow2-reader.js";
import { fileContents, withExt4 } from "./helpers/ext4-image.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

/**
 * Hostile ext4 images, crafted byte by byte: the guest's root wrote every byte of the disk the host
 * reads, so each image here is one a guest can leave behind. Each is read in a child process with
 * a small heap and a deadline, so a hang or a memory bomb fails the test instead of the suite.
 */

const mkfs = findExecutable("mkfs.ext4");
const debugfs = findExecutable("debugfs");
const skip = !mkfs || !debugfs ? "needs mkfs.ext4 and debugfs" : false;

const BLOCK = 4096;
const EXTENT_MAGIC = 0xf30a;
const JBD2_MAGIC = 0xc03b3998;
/** Blocks well past what mkfs uses on a 1 GiB image (its journal sits at 131072-139263): the attacker's scratch space. */
const FREE_AREA = 150_000;

/** A 1 GiB sparse image of `tree` made with pyro's own mkfs options (4 KiB blocks, 64bit, flex_bg, metadata_csum). */
function makeImage(image: string, tree: string): void {
  execFileSync("truncate", ["-s", "1G", image]);
  execFileSync(mkfs!, ["-q", "-F", "-t", "ext4", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-d", tree, image], {
    stdio: "ignore",
  });
}

function writeAt(image: string, position: number, bytes: Buffer): void {
  const fd = openSync(image, "r+");
  try {
    writeSync(fd, bytes, 0, bytes.length, position);
  } finally {
    closeSync(fd);
  }
}

function debugfsOut(image: string, request: string): string {
  return execFileSync(debugfs!, ["-R", request, image], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
}

/** Byte offset of inode `ino` in the image (debugfs imap). */
function inodeOffset(image: string, ino: number | string): number {
  const out = debugfsOut(image, `imap ${typeof ino === "number" ? `<${ino}>` : ino}`);
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(out);
  assert.ok(m, out);
  return Number(m[1]) * BLOCK + Number.parseInt(m[2]!, 16);
}

/** Byte offsets of many inodes at once (one debugfs run). */
function inodeOffsets(image: string, paths: string[]): number[] {
  const out = execFileSync(debugfs!, ["-f", "-", image], {
    input: paths.map((p) => `imap ${p}\n`).join(""),
    encoding: "utf8",
    stdio: ["pipe", "pipe", "ignore"],
  });
  const offsets = [...out.matchAll(/located at block (\d+), offset 0x([0-9a-f]+)/g)].map((m) => Number(m[1]) * BLOCK + Number.parseInt(m[2]!, 16));
  assert.equal(offsets.length, paths.length);
  return offsets;
}

/** The disk block of logical block `n` of `path`. */
function bmap(image: string, path: string, n = 0): number {
  return Number(debugfsOut(image, `bmap ${path} ${n}`).trim());
}

function extentHeader(entries: number, max: number, depth: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16LE(EXTENT_MAGIC, 0);
  b.writeUInt16LE(entries, 2);
  b.writeUInt16LE(max, 4);
  b.writeUInt16LE(depth, 6);
  return b;
}

function leaf(logical: number, length: number, physical: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(logical, 0);
  b.writeUInt16LE(length, 4);
  b.writeUInt16LE(Math.floor(physical / 2 ** 32), 6);
  b.writeUInt32LE(physical % 2 ** 32, 8);
  return b;
}

function index(logical: number, child: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(logical, 0);
  b.writeUInt32LE(child % 2 ** 32, 4);
  b.writeUInt16LE(Math.floor(child / 2 ** 32), 8);
  return b;
}

/**
 * Gives inode `ino` a two-level extent tree mapping `extents` ([logical, length, physical]) and the
 * size `size`; its leaf and index blocks are written from block `at` on. Returns the next free block.
 */
function setExtents(image: string, ino: number, extents: [number, number, number][], size: number, at: number): number {
  const perBlock = Math.floor((BLOCK - 12) / 12);
  const leaves: { first: number; block: number }[] = [];
  for (let i = 0; i < extents.length; i += perBlock) {
    const chunk = extents.slice(i, i + perBlock);
    const body = Buffer.concat([extentHeader(chunk.length, perBlock, 0), ...chunk.map(([l, n, p]) => leaf(l, n, p))]);
    writeAt(image, at * BLOCK, Buffer.concat([body, Buffer.alloc(BLOCK - body.length)]));
    leaves.push({ first: chunk[0]![0], block: at++ });
  }
  const indexes: { first: number; block: number }[] = [];
  for (let i = 0; i < leaves.length; i += perBlock) {
    const chunk = leaves.slice(i, i + perBlock);
    const body = Buffer.concat([extentHeader(chunk.length, perBlock, 1), ...chunk.map((l) => index(l.first, l.block))]);
    writeAt(image, at * BLOCK, Buffer.concat([body, Buffer.alloc(BLOCK - body.length)]));
    indexes.push({ first: chunk[0]!.first, block: at++ });
  }
  assert.ok(indexes.length <= 4);
  const root = Buffer.concat([extentHeader(indexes.length, 4, 2), ...indexes.map((i) => index(i.first, i.block))]);
  const inode = inodeOffset(image, ino);
  writeAt(image, inode + 0x28, Buffer.concat([root, Buffer.alloc(60 - root.length)]));
  const sizes = Buffer.alloc(4);
  sizes.writeUInt32LE(size % 2 ** 32);
  writeAt(image, inode + 0x4, sizes);
  sizes.writeUInt32LE(Math.floor(size / 2 ** 32));
  writeAt(image, inode + 0x6c, sizes);
  return at;
}

/** The journal's superblock made to say a transaction log starts at block 1 of a journal `length` blocks long. */
function openJournal(image: string, length: number, sbBlock: number): void {
  const sbAt = sbBlock * BLOCK;
  const fields = Buffer.alloc(16);
  fields.writeUInt32BE(length, 0); // s_maxlen
  fields.writeUInt32BE(1, 4); // s_first
  fields.writeUInt32BE(1, 8); // s_sequence
  fields.writeUInt32BE(1, 12); // s_start
  writeAt(image, sbAt + 16, fields);
}

function journalBlock(type: number, sequence: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.writeUInt32BE(JBD2_MAGIC, 0);
  b.writeUInt32BE(type, 4);
  b.writeUInt32BE(sequence, 8);
  return b;
}

interface ReadOutcome {
  entries?: number;
  code?: string;
  message?: string;
  crashed?: string;
  timedOut?: boolean;
  ms: number;
  /** The child's peak resident memory, MiB. */
  rssMb?: number;
}

const READER_URL = new URL("../src/storage/ext4-reader.js", import.meta.url).href;
const DISK_URL = new URL("../src/storage/qcow2-reader.js", import.meta.url).href;

/** Opens `image`, walks it whole (in `order`) and reads every file, in a child with a 256 MiB heap and a deadline. */
function readInChild(image: string, deadlineMs = 20_000, order: "manifest" | "subtree" = "manifest"): ReadOutcome {
  const script = `
    const { Ext4Reader } = await import(${JSON.stringify(READER_URL)});
    const { openDisk } = await import(${JSON.stringify(DISK_URL)});
    try {
      const disk = openDisk(process.argv[1]);
      const fs = Ext4Reader.open(disk);
      let entries = 0;
      const piece = Buffer.allocUnsafe(1 << 20);
      for (const e of fs.walk(fs.lookup(""), { order: process.argv[2] })) { entries++; if (e.type === "f") { const read = fs.contentReader(e.inode); while (read(piece) > 0); } }
      console.log(JSON.stringify({ entries, rssMb: process.resourceUsage().maxRSS >> 10 }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code ?? "untyped " + e.name, message: e.message, rssMb: process.resourceUsage().maxRSS >> 10 }));
    }`;
  const started = Date.now();
  const child = spawnSync(process.execPath, ["--max-old-space-size=256", "--input-type=module", "-e", script, image, order], {
    encoding: "utf8",
    timeout: deadlineMs,
    killSignal: "SIGKILL",
  });
  const ms = Date.now() - started;
  if (child.error || child.signal === "SIGKILL") return { timedOut: true, ms };
  const line = child.stdout.trim().split("\n").pop() ?? "";
  if (child.status !== 0 || !line.startsWith("{")) return { crashed: `${child.status} ${child.stderr.slice(-300)}`, ms };
  return { ...JSON.parse(line), ms };
}

/** A typed refusal (one line) or a walk, quickly. */
function assertEndsQuickly(outcome: ReadOutcome, withinMs: number): void {
  assert.ok(!outcome.timedOut, `the reader was still busy after ${outcome.ms} ms`);
  assert.equal(outcome.crashed, undefined, `the reader crashed: ${outcome.crashed}`);
  if (outcome.code !== undefined) {
    assert.ok(outcome.code === "DISK_IMAGE_INVALID" || outcome.code === "GUEST_OPERATION_FAILED", `${outcome.code}: ${outcome.message}`);
    assert.ok(!outcome.message!.includes("\n"));
  }
  assert.ok(outcome.ms < withinMs, `took ${outcome.ms} ms`);
}

describe("ext4 reader on hostile journals", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4h-");
  let tree: string;
  before(async () => {
    tree = join(dir(), "tree");
    await mkdir(join(tree, "d"), { recursive: true });
    await writeFile(join(tree, "a"), "a file\n");
  });

  /** A descriptor block with one tag, the last (same UUID), logging filesystem block 100. */
  const descriptorBlock = (): Buffer => {
    const descriptor = journalBlock(1, 1);
    descriptor.writeUInt32BE(100, 12);
    descriptor.writeUInt16BE(0x8 | 0x2, 18);
    return descriptor;
  };

  /**
   * Makes the journal (inode 8) at most `length` blocks: its own superblock first, then extents of
   * `run` blocks each mapped onto the same blocks from FREE_AREA (at most `maxExtents` extents).
   */
  const journalOntoFreeArea = (image: string, length: number, run = 1, maxExtents = Number.POSITIVE_INFINITY): void => {
    const sbBlock = bmap(image, "<8>");
    const extents: [number, number, number][] = [[0, 1, sbBlock]];
    for (let n = 1; n + run <= length && extents.length < maxExtents; n += run) extents.push([n, run, FREE_AREA]);
    const mapped = 1 + (extents.length - 1) * run;
    setExtents(image, 8, extents, mapped * BLOCK, FREE_AREA + run);
    openJournal(image, mapped, sbBlock);
  };

  it("a journal whose extents map every block onto one descriptor block is read in time linear in its length", () => {
    // 250k one-block extents (all but the first onto the same descriptor block): each journal
    // block looked up by a scan over all extents made the journal scan quadratic (~3e10 steps).
    const image = join(dir(), "journal-many-extents.ext4");
    makeImage(image, tree);
    writeAt(image, FREE_AREA * BLOCK, descriptorBlock());
    journalOntoFreeArea(image, 250_000);
    assertEndsQuickly(readInChild(image), 8000);
  });

  it("a journal longer than the filesystem is refused, not scanned", () => {
    // 2^31 journal blocks claimed, every one mapped (by 32768-block extents over the same range) to
    // a descriptor: the scan would read 8 TiB.
    const image = join(dir(), "journal-huge.ext4");
    makeImage(image, tree);
    const run = 32_768;
    const descriptors = Buffer.concat(Array.from({ length: 64 }, descriptorBlock));
    for (let i = 0; i < run; i += 64) writeAt(image, (FREE_AREA + i) * BLOCK, descriptors);
    journalOntoFreeArea(image, 2 ** 31 - 1, run, 40_000);
    assertEndsQuickly(readInChild(image), 8000);
  });

  it("revoke blocks naming one block 10^8 times hold one record", () => {
    const image = join(dir(), "journal-revokes.ext4");
    makeImage(image, tree);
    const revoke = journalBlock(5, 1);
    revoke.writeUInt32BE(BLOCK, 12); // bytes used: the whole block
    for (let at = 16; at < BLOCK; at += 4) revoke.writeUInt32BE(100, at);
    writeAt(image, FREE_AREA * BLOCK, revoke);
    // 100k journal blocks, all the one revoke block of 1020 records: 10^8 records were kept one by one (a heap exhausted).
    journalOntoFreeArea(image, 100_000);
    assertEndsQuickly(readInChild(image), 8000);
  });
});

describe("ext4 reader on hostile directories", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4d-");

  it("directories made of holes cost the walk the filesystem's blocks once, not once per directory", async () => {
    // 400 directories, each claiming the whole disk (1 GiB) as a block map of holes through one
    // shared zero indirect block: every directory cost a step per block (400 x 262144).
    const tree = join(dir(), "holes");
    const count = 400;
    for (let i = 0; i < count; i++) await mkdir(join(tree, `d${i}`), { recursive: true });
    const image = join(dir(), "holes.ext4");
    makeImage(image, tree);
    const zeros = FREE_AREA; // all zeros: every pointer a hole
    const doubly = FREE_AREA + 1; // every pointer the zero block
    const pointers = Buffer.alloc(BLOCK);
    for (let at = 0; at < BLOCK; at += 4) pointers.writeUInt32LE(zeros, at);
    writeAt(image, doubly * BLOCK, pointers);
    const map = Buffer.alloc(60);
    map.writeUInt32LE(zeros, 12 * 4);
    map.writeUInt32LE(doubly, 13 * 4);
    const size = Buffer.alloc(4);
    size.writeUInt32LE(2 ** 30 - BLOCK);
    for (const at of inodeOffsets(
      image,
      Array.from({ length: count }, (_, i) => `/d${i}`),
    )) {
      writeAt(image, at + 0x4, size);
      writeAt(image, at + 0x20, Buffer.alloc(4)); // flags: no extents, an old block map
      writeAt(image, at + 0x28, map);
    }
    assertEndsQuickly(readInChild(image), 8000);
  });

  it("directories sharing one deep extent tree of empty nodes cost the walk its blocks once, not once per directory", async () => {
    // Each directory's extent root names 2 x 340 x 340 index entries (under its own node budget),
    // all ending in one empty leaf: 231k node visits per directory, 400 directories.
    const tree = join(dir(), "nodes");
    const count = 400;
    for (let i = 0; i < count; i++) await mkdir(join(tree, `d${i}`), { recursive: true });
    const image = join(dir(), "nodes.ext4");
    makeImage(image, tree);
    const perBlock = Math.floor((BLOCK - 12) / 12);
    const node = (depth: number, keys: (i: number) => number, child: number) => {
      const body = Buffer.concat([extentHeader(perBlock, perBlock, depth), ...Array.from({ length: perBlock }, (_, i) => index(keys(i), child))]);
      return Buffer.concat([body, Buffer.alloc(BLOCK - body.length)]);
    };
    const empty = FREE_AREA;
    const level1 = FREE_AREA + 1;
    const level2 = FREE_AREA + 2;
    writeAt(image, empty * BLOCK, Buffer.concat([extentHeader(0, perBlock, 0), Buffer.alloc(BLOCK - 12)]));
    writeAt(
      image,
      level1 * BLOCK,
      node(1, (i) => i, empty),
    );
    writeAt(
      image,
      level2 * BLOCK,
      node(2, (i) => i * perBlock, level1),
    );
    const root = Buffer.concat([extentHeader(2, 4, 3), index(0, level2), index(perBlock * perBlock + 1, level2), Buffer.alloc(60 - 36)]);
    const size = Buffer.alloc(4);
    size.writeUInt32LE(2 ** 30 - BLOCK);
    for (const at of inodeOffsets(
      image,
      Array.from({ length: count }, (_, i) => `/d${i}`),
    )) {
      writeAt(image, at + 0x4, size);
      writeAt(image, at + 0x28, root);
    }
    assertEndsQuickly(readInChild(image), 8000);
  });
});

describe("ext4 reader on a chain of directories each listing the entry limit", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4c-");

  it("an export's walk (subtree order) holds at most the entry limit in listings at once: refused, not ~40 x 500k entries held", async () => {
    // A chain c/!/!/... of 40 directories, each with its own first block (naming the next as '!')
    // and then the same 1466 shared blocks of 499,906 names (all one file). In subtree order each
    // directory keeps its listing while the one below is walked; each had the whole entry limit
    // to itself (only yielded entries were counted), so 40 listings of ~500k entries were held.
    const depth = 40;
    const shared = 1466;
    const perBlock = Math.floor(BLOCK / 12); // 4-byte names: 12-byte records
    const tree = join(dir(), "chain");
    const chain = Array.from({ length: depth }, (_, i) => ["c", ...Array<string>(i).fill("!")].join("/"));
    await mkdir(join(tree, chain.at(-1)!), { recursive: true });
    await writeFile(join(tree, "f"), "x");
    const image = join(dir(), "chain.ext4");
    makeImage(image, tree);
    const fileIno = Number(/Inode: (\d+)/.exec(debugfsOut(image, "stat /f"))![1]);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const blocks = Buffer.alloc(shared * BLOCK);
    let name = 0;
    for (let b = 0; b < shared; b++) {
      for (let i = 0; i < perBlock; i++, name++) {
        const at = b * BLOCK + i * 12;
        blocks.writeUInt32LE(fileIno, at);
        blocks.writeUInt16LE(i === perBlock - 1 ? BLOCK - i * 12 : 12, at + 4);
        blocks[at + 6] = 4;
        blocks[at + 7] = 1; // a regular file
        for (let k = 0, n = name; k < 4; k++, n = Math.floor(n / 62)) blocks[at + 8 + k] = alphabet.charCodeAt(n % 62);
      }
    }
    writeAt(image, FREE_AREA * BLOCK, blocks);
    const own = chain.map((p) => bmap(image, `/${p}`));
    const sizes = Buffer.alloc(4);
    sizes.writeUInt32LE((1 + shared) * BLOCK);
    inodeOffsets(
      image,
      chain.map((p) => `/${p}`),
    ).forEach((at, i) => {
      const root = Buffer.concat([extentHeader(2, 4, 0), leaf(0, 1, own[i]!), leaf(1, shared, FREE_AREA)]);
      writeAt(image, at + 0x4, sizes);
      writeAt(image, at + 0x20, Buffer.from([0, 0, 8, 0])); // flags: extents only (no htree index)
      writeAt(image, at + 0x28, Buffer.concat([root, Buffer.alloc(60 - root.length)]));
    });
    const outcome = readInChild(image, 60_000, "subtree");
    assertEndsQuickly(outcome, 60_000);
    assert.equal(outcome.code, "GUEST_OPERATION_FAILED", JSON.stringify(outcome));
    assert.match(outcome.message!, /more than 500000 files/);
  });
});

describe("ext4 reader on a directory of long names", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4n-");

  it("a listing's names are held to the manifest's byte bound: refused within 200 MB, not ~75 MB of names held twice", async () => {
    // One directory of 20000 blocks, all mapped to one block of 15 names of 255 bytes: 300k
    // entries (under the entry limit) whose names are 76.5 MB. The listing grew its scratch to
    // 128 MiB and copied the names out of it before anything checked them.
    const tree = join(dir(), "long");
    await mkdir(join(tree, "big"), { recursive: true });
    await writeFile(join(tree, "f"), "x");
    const image = join(dir(), "long.ext4");
    makeImage(image, tree);
    const fileIno = Number(/Inode: (\d+)/.exec(debugfsOut(image, "stat /f"))![1]);
    const bigIno = Number(/Inode: (\d+)/.exec(debugfsOut(image, "stat /big"))![1]);
    const names = Buffer.alloc(BLOCK);
    for (let i = 0; i < 15; i++) {
      const at = i * 264;
      names.writeUInt32LE(fileIno, at);
      names.writeUInt16LE(i === 14 ? BLOCK - at : 264, at + 4);
      names[at + 6] = 255;
      names[at + 7] = 1; // a regular file
      names.fill(0x61 + i, at + 8, at + 8 + 255);
    }
    writeAt(image, FREE_AREA * BLOCK, names);
    const blocks = 20_000;
    setExtents(
      image,
      bigIno,
      Array.from({ length: blocks }, (_, i): [number, number, number] => [i, 1, FREE_AREA]),
      blocks * BLOCK,
      FREE_AREA + 1,
    );
    const outcome = readInChild(image, 60_000);
    assertEndsQuickly(outcome, 60_000);
    assert.equal(outcome.code, "GUEST_OPERATION_FAILED", JSON.stringify(outcome));
    assert.match(outcome.message!, /names hold more than \d+ bytes/);
    assert.ok(outcome.rssMb! < 200, `peak RSS ${outcome.rssMb} MiB`);
    console.log(`long names: refused at peak RSS ${outcome.rssMb} MiB in ${outcome.ms} ms`);
  });
});

describe("ext4 reader on names that are not UTF-8", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4n-");

  const walk = (image: string) => {
    return withExt4(image, (fs) => [...fs.walk(fs.lookup("")!, { order: "subtree" })].map((e) => [e.path, e.type, e.target]));
  };

  it("a name whose bytes are not UTF-8 cannot pass for another name: no two entries share a path", async () => {
    // The byte name 0xff is shown as the text '\xff', which is also a valid name of its own: as a
    // symlink to a host directory next to a directory 0xff holding 'f', the walk (and an export's
    // tar) listed './\xff' -> /tmp/…, './\xff/' and './\xff/f'; Python's tarfile extracting it
    // writes 'f' into the symlink's target on the host.
    const tree = join(dir(), "spoof");
    await mkdir(tree);
    await symlink("/tmp/pyro-host-dir", join(tree, "\\xff"));
    const raw = Buffer.concat([Buffer.from(`${tree}/`), Buffer.from([0xff])]);
    await mkdir(raw);
    await writeFile(Buffer.concat([raw, Buffer.from("/f")]), "planted\n");
    const image = join(dir(), "spoof.ext4");
    makeImage(image, tree);
    let listed: unknown[][] | undefined;
    try {
      listed = walk(image);
    } catch (error) {
      assert.ok(isPyroError(error, "DISK_IMAGE_INVALID") && /shown as/.test(error.message), String(error));
    }
    if (listed) assert.equal(new Set(listed.map(([path]) => path)).size, listed.length, JSON.stringify(listed));
  });

  it("a name that is not UTF-8 on its own is still walked, shown with \\xNN escapes and marked so", async () => {
    const tree = join(dir(), "latin1");
    await mkdir(tree);
    await writeFile(Buffer.concat([Buffer.from(`${tree}/caf`), Buffer.from([0xe9])]), "x\n");
    const image = join(dir(), "latin1.ext4");
    makeImage(image, tree);
    withExt4(image, (fs) => {
      const entries = [...fs.walk(fs.lookup("")!)].filter((e) => e.path !== "lost+found");
      assert.deepEqual(
        entries.map((e) => [e.path, e.utf8Name]),
        [["caf\\xe9", false]],
      );
    });
  });
});

describe("ext4 reader on hostile symlinks", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4l-");

  it("a symlink target holding a NUL byte is refused, not shown whole by diff and cut short in a tar", async () => {
    const tree = join(dir(), "nul");
    await mkdir(tree);
    await symlink("/etc/junk", join(tree, "link"));
    const image = join(dir(), "nul.ext4");
    makeImage(image, tree);
    // A fast symlink: its target is the inode's block area.
    writeAt(image, inodeOffset(image, "/link") + 0x28 + 4, Buffer.from([0]));
    withExt4(image, (fs) => {
      assert.throws(
        () => [...fs.walk(fs.lookup("")!)],
        (e) => isPyroError(e, "DISK_IMAGE_INVALID") && /NUL/.test(e.message),
      );
    });
  });
});

describe("ext4 reader on symlinks sharing one extent tree", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4s-");

  it("their extent nodes are charged to the walk's budget, as directories' are: the walk is refused, not paid per link", async () => {
    // 6000 slow symlinks on a 16384-block filesystem, each given one three-level chain of index
    // nodes (shared by all) down to a leaf mapping a real target: 18000 node reads, more blocks
    // than the filesystem has. An honest link's map is a leaf in its inode and costs nothing.
    const tree = join(dir(), "links");
    const count = 6000;
    await mkdir(tree);
    for (let i = 0; i < count; i++) await symlink("t".repeat(100), join(tree, `l${i}`));
    const image = join(dir(), "links.ext4");
    execFileSync("truncate", ["-s", "64M", image]);
    execFileSync(mkfs!, ["-q", "-F", "-t", "ext4", "-b", "4096", "-N", "7000", "-m", "0", "-E", "lazy_itable_init=1,root_owner=0:0", "-d", tree, image], {
      stdio: "ignore",
    });
    const free = debugfsOut(image, "ffb 4 15000").match(/\d+/g)!.map(Number).slice(-4);
    assert.equal(free.length, 4);
    const [level2, level1, leafBlock, data] = free as [number, number, number, number];
    const block = (body: Buffer) => Buffer.concat([body, Buffer.alloc(BLOCK - body.length)]);
    writeAt(image, level2 * BLOCK, block(Buffer.concat([extentHeader(1, 340, 2), index(0, level1)])));
    writeAt(image, level1 * BLOCK, block(Buffer.concat([extentHeader(1, 340, 1), index(0, leafBlock)])));
    writeAt(image, leafBlock * BLOCK, block(Buffer.concat([extentHeader(1, 340, 0), leaf(0, 1, data)])));
    writeAt(image, data * BLOCK, block(Buffer.from("t".repeat(100))));
    const root = Buffer.concat([extentHeader(1, 4, 3), index(0, level2)]);
    const flags = Buffer.alloc(4);
    flags.writeUInt32LE(0x80000); // extents
    for (const at of inodeOffsets(
      image,
      Array.from({ length: count }, (_, i) => `/l${i}`),
    )) {
      writeAt(image, at + 0x20, flags);
      writeAt(image, at + 0x28, Buffer.concat([root, Buffer.alloc(60 - root.length)]));
    }
    const outcome = readInChild(image);
    assertEndsQuickly(outcome, 8000);
    assert.equal(outcome.code, "DISK_IMAGE_INVALID", JSON.stringify(outcome));
    assert.match(outcome.message!, /more blocks than the filesystem/);
  });
});

describe("ext4 reader on corrupted journals (fast-check)", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4j-");
  let image: Buffer;
  let journalAt: number;
  let journalInodeAt: number;
  before(async () => {
    const tree = join(dir(), "tree");
    await mkdir(join(tree, "d"), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(tree, "d", `f${i}`), `${i}\n`.repeat(i * 100));
    // 64 MiB with pyro's options and 4 KiB blocks, three committed transactions (one revoking) in its journal.
    const path = join(dir(), "j.ext4");
    execFileSync("truncate", ["-s", "64M", path]);
    execFileSync(mkfs!, ["-q", "-F", "-b", "4096", "-t", "ext4", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-d", tree, path], {
      stdio: "ignore",
    });
    const data = join(dir(), "blk");
    await writeFile(data, Buffer.alloc(BLOCK, 0x5a));
    execFileSync(debugfs!, ["-w", "-f", "-", path], {
      input: `jo\njw -b 9000,9001 ${data}\njc\njo\njw -r 9001\njc\njo\njw -b 9002 ${data}\njc\n`,
      stdio: ["pipe", "ignore", "ignore"],
    });
    journalAt = bmap(path, "<8>") * BLOCK;
    journalInodeAt = inodeOffset(path, 8);
    const { readFileSync } = await import("node:fs");
    image = readFileSync(path);
  });

  it("any corruption of the journal's superblock, log blocks or inode ends in entries or a typed error, quickly", async () => {
    const fc = (await import("fast-check")).default;
    const areas = [
      [journalAt, journalAt + 6 * BLOCK],
      [journalInodeAt, journalInodeAt + 0x28 + 60],
    ] as const;
    fc.assert(
      fc.property(
        fc.array(fc.record({ area: fc.nat({ max: 1 }), at: fc.nat(), value: fc.nat({ max: 2 ** 32 - 1 }), wide: fc.boolean() }), {
          minLength: 1,
          maxLength: 8,
        }),
        (edits) => {
          // The edits as single bytes over the image, applied as it is read (no 64 MiB copy per run).
          const patch = new Map<number, number>();
          for (const { area, at, value, wide } of edits) {
            const [from, to] = areas[area]!;
            const where = from + (at % (to - from - 4));
            if (wide) for (let k = 0; k < 4; k++) patch.set((where & ~3) + k, (value >>> (24 - 8 * k)) & 0xff);
            else patch.set(where, value & 0xff);
          }
          const disk = {
            size: image.length,
            readSync(target: Buffer, position: number) {
              target.fill(0);
              if (position < image.length) image.copy(target, 0, position, Math.min(image.length, position + target.length));
              for (const [at, byte] of patch) if (at >= position && at < position + target.length) target[at - position] = byte;
            },
            close() {},
          };
          const started = Date.now();
          try {
            const fs = Ext4Reader.open(disk);
            for (const e of fs.walk(fs.lookup("")!)) if (e.type === "f") for (const _ of fileContents(fs, e.inode));
          } catch (error) {
            if (!isPyroError(error, "DISK_IMAGE_INVALID") && !isPyroError(error, "GUEST_OPERATION_FAILED")) throw error;
          }
          assert.ok(Date.now() - started < 2000, "took over 2 s");
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("ext4 reader's content reader on crafted extents (fast-check)", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4r-");
  let image: string;
  let inodeAt: number;
  let fileIno: number;
  const data = Buffer.alloc(32 * BLOCK);
  before(async () => {
    const tree = join(dir(), "tree");
    await mkdir(tree);
    await writeFile(join(tree, "f"), "x");
    image = join(dir(), "r.ext4");
    makeImage(image, tree);
    fileIno = Number(/Inode: (\d+)/.exec(debugfsOut(image, "stat /f"))![1]);
    inodeAt = inodeOffset(image, fileIno);
    for (let i = 0; i < data.length; i++) data[i] = (i * 131 + (i >> 12) * 7 + 1) & 0xff || 1;
    writeAt(image, FREE_AREA * BLOCK, data);
  });

  it("export's reader and the whole-file read give what the extents say: holes, unwritten extents, a last partial block, a size past the extents", async () => {
    const fc = (await import("fast-check")).default;
    const extent = fc.record({ gap: fc.integer({ min: 0, max: 3 }), length: fc.integer({ min: 1, max: 4 }), unwritten: fc.boolean() });
    fc.assert(
      fc.property(
        fc.array(extent, { minLength: 0, maxLength: 4 }),
        fc.integer({ min: 1, max: 32 * BLOCK - 1 }),
        fc.array(fc.constantFrom(BLOCK, 2 * BLOCK, BLOCK + 1, 3 * BLOCK - 1, 1 << 20), { minLength: 1, maxLength: 4 }),
        (extents, size, targets) => {
          // Extents in logical order with gaps; each block's data is at FREE_AREA + its logical number.
          const leaves: Buffer[] = [];
          const expected = Buffer.alloc(size);
          let logical = 0;
          for (const e of extents) {
            logical += e.gap;
            if (logical + e.length > 32) break;
            leaves.push(leaf(logical, e.length + (e.unwritten ? 32768 : 0), FREE_AREA + logical));
            if (!e.unwritten) data.copy(expected, logical * BLOCK, logical * BLOCK, Math.min(size, (logical + e.length) * BLOCK));
            logical += e.length;
          }
          const root = Buffer.concat([extentHeader(leaves.length, 4, 0), ...leaves]);
          writeAt(image, inodeAt + 0x28, Buffer.concat([root, Buffer.alloc(60 - root.length)]));
          const sizeField = Buffer.alloc(4);
          sizeField.writeUInt32LE(size);
          writeAt(image, inodeAt + 0x4, sizeField);
          const fs = Ext4Reader.open(openDisk(image));
          const inode = fs.inode(fileIno);
          const read = fs.contentReader(inode);
          const out: Buffer[] = [];
          let total = 0;
          for (let turn = 0; total < size; turn++) {
            const target = Buffer.alloc(targets[turn % targets.length]!, 0xee);
            const n = read(target);
            assert.ok(n > 0, `no progress at ${total} of ${size}`);
            out.push(target.subarray(0, n));
            total += n;
          }
          assert.equal(read(Buffer.alloc(BLOCK)), 0);
          const streamed = Buffer.concat(out);
          assert.equal(streamed.length, size);
          assert.ok(streamed.equals(expected), "export's reader differs from the extents");
          assert.ok(fs.bytes(inode).equals(expected), "the whole-file read differs from the extents");
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe("ext4 reader's whole-file and link reads over several runs", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4w-");

  it("a file mapped by two extents, and a 2 MiB file, read whole as written (diff's bytes were views of one reused piece buffer)", async () => {
    const tree = join(dir(), "files");
    await mkdir(tree);
    const big = Buffer.alloc(2 * 1024 * 1024 + 100);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 20)) & 0xff;
    await writeFile(join(tree, "big"), big);
    const two = Buffer.concat([Buffer.alloc(BLOCK, 0x31), Buffer.alloc(100, 0x32)]);
    await writeFile(join(tree, "two"), two);
    const image = join(dir(), "files.ext4");
    makeImage(image, tree);
    // "two": its second block moved away from its first, so its map holds two extents.
    const ino = Number(/Inode: (\d+)/.exec(debugfsOut(image, "stat /two"))![1]);
    writeAt(image, FREE_AREA * BLOCK, Buffer.concat([Buffer.alloc(100, 0x32), Buffer.alloc(BLOCK - 100)]));
    const root = Buffer.concat([extentHeader(2, 4, 0), leaf(0, 1, bmap(image, "/two", 0)), leaf(1, 1, FREE_AREA)]);
    writeAt(image, inodeOffset(image, ino) + 0x28, Buffer.concat([root, Buffer.alloc(60 - root.length)]));
    const fs = Ext4Reader.open(openDisk(image));
    assert.ok(fs.bytes(fs.lookup("two")!).equals(two));
    assert.ok(fs.bytes(fs.lookup("big")!).equals(big));
  });

  it("a slow symlink whose target spans two extents reads as written (it read as its last extent's bytes)", async () => {
    // ext4 keeps a link target in one block, but the reader takes up to 4096 bytes, as a crafted
    // 1 KiB-block image can map them: two extents, the target read through two pieces.
    const tree = join(dir(), "link");
    await mkdir(tree);
    await symlink("x".repeat(900), join(tree, "l"));
    const image = join(dir(), "link.ext4");
    execFileSync("truncate", ["-s", "64M", image]);
    execFileSync(mkfs!, ["-q", "-F", "-t", "ext4", "-b", "1024", "-m", "0", "-E", "lazy_itable_init=1,root_owner=0:0", "-d", tree, image], { stdio: "ignore" });
    const target = `${"a".repeat(1024)}${"b".repeat(1024)}${"c".repeat(500)}`;
    const first = 60_000;
    const rest = 61_000;
    writeAt(image, first * 1024, Buffer.from(target.slice(0, 1024)));
    writeAt(image, rest * 1024, Buffer.concat([Buffer.from(target.slice(1024)), Buffer.alloc(3 * 1024 - target.length)]));
    const root = Buffer.concat([extentHeader(2, 4, 0), leaf(0, 1, first), leaf(1, 2, rest)]);
    const located = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfsOut(image, "imap /l"))!;
    const at = Number(located[1]) * 1024 + Number.parseInt(located[2]!, 16);
    const size = Buffer.alloc(4);
    size.writeUInt32LE(target.length);
    writeAt(image, at + 0x4, size);
    writeAt(image, at + 0x20, Buffer.from([0, 0, 8, 0])); // flags: extents
    writeAt(image, at + 0x28, Buffer.concat([root, Buffer.alloc(60 - root.length)]));
    const fs = Ext4Reader.open(openDisk(image));
    assert.equal(fs.entry("l", fs.lookup("l")!).target, target);
    const walked = [...fs.walk(fs.lookup("")!)].find((e) => e.path === "l");
    assert.equal(walked?.target, target);
  });
});
