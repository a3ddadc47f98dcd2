import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, writeFileSync, writeSync } from "node:fs";
import { chmod, link, mkdir, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { findExecutable } from "../src/process/host-command.js";
import { type Ext4Inode, Ext4Reader } from "../src/storage/ext4-reader.js";
import { type DiskReader, openDisk } from "../src/storage/qcow2-reader.js";
import { buildSeedImage, scanSeed } from "../src/workspaces/seed-image.js";
import { fileContents, withExt4 } from "./helpers/ext4-image.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

const mkfs = findExecutable("mkfs.ext4");
const debugfs = findExecutable("debugfs");
const qemuImg = findExecutable("qemu-img");
const skip = !mkfs || !debugfs || !qemuImg || !findExecutable("bwrap") ? "needs mkfs.ext4, debugfs, qemu-img and bwrap" : false;

/** A disk held in memory (corruption properties mutate a copy of a real image). */
function memoryDisk(bytes: Buffer): DiskReader {
  return {
    size: bytes.length,
    readSync(target, position) {
      target.fill(0);
      if (position < bytes.length) bytes.copy(target, 0, position, Math.min(bytes.length, position + target.length));
    },
    close() {},
  };
}

/** The disk block holding logical block 0 of `path` in an ext4 image. */
function bmap(image: string, path: string): number {
  const out = execFileSync(debugfs!, ["-R", `bmap ${path} 0`, image], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const block = Number(out.trim());
  assert.ok(Number.isInteger(block) && block > 0, out);
  return block;
}

/** What the agent's walk of the host tree would list: depth first, names in byte order, the root left out. */
function hostWalk(root: string): { path: string; type: string; mode: number; size: number; target: string; mtimeS: number }[] {
  const out: ReturnType<typeof hostWalk> = [];
  const stack = [""];
  while (stack.length) {
    const dir = stack.pop()!;
    const names = readdirSync(join(root, dir), { encoding: "buffer" }).sort(Buffer.compare);
    const subdirs: string[] = [];
    for (const name of names) {
      const path = dir ? `${dir}/${name.toString()}` : name.toString();
      const st = lstatSync(join(root, path));
      const type = st.isFile() ? "f" : st.isDirectory() ? "d" : st.isSymbolicLink() ? "l" : "o";
      const target = type === "l" ? readlinkSync(join(root, path)) : "";
      out.push({ path, type, mode: st.mode & 0o7777, size: type === "d" ? -1 : st.size, target, mtimeS: Math.floor(st.mtimeMs / 1000) });
      if (type === "d") subdirs.push(path);
    }
    stack.push(...subdirs.reverse());
  }
  return out;
}

function readerWalk(fs: Ext4Reader, root = "") {
  const dir = fs.lookup(root);
  assert.equal(dir?.type, "d");
  return [...fs.walk(dir!)];
}

/** A file's whole contents (each piece copied: the reader reuses its buffer). */
function bytesOf(fs: Ext4Reader, inode: Ext4Inode): Buffer {
  return Buffer.concat(Array.from(fileContents(fs, inode), (piece) => Buffer.from(piece)));
}

function sha(pieces: Iterable<Buffer>): string {
  const hash = createHash("sha256");
  for (const piece of pieces) hash.update(piece);
  return hash.digest("hex");
}

/** A tree with what checkouts hold: nesting, empty dirs, exec bits, symlinks short and long, hardlinks, long and UTF-8 names, a large (htree) directory, multi-extent and sparse files. */
async function makeTree(tree: string): Promise<void> {
  await mkdir(join(tree, "src", "deep", "er"), { recursive: true });
  await mkdir(join(tree, "empty"));
  await mkdir(join(tree, "many"));
  await writeFile(join(tree, "src", "main.ts"), "export const x = 1;\n");
  await writeFile(join(tree, "src", "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(tree, "src", "run.sh"), 0o755);
  await writeFile(join(tree, "src", "deep", "er", "blob.bin"), randomBytes(3 * 1024 * 1024 + 17));
  await writeFile(join(tree, "sparse"), "");
  await truncate(join(tree, "sparse"), 5 * 1024 * 1024);
  await writeFile(join(tree, "ünïcødé.txt"), "utf8\n");
  await writeFile(join(tree, "n".repeat(255)), "long name\n");
  await writeFile(join(tree, "linked"), "two names\n");
  await link(join(tree, "linked"), join(tree, "src", "also-linked"));
  await symlink("main.ts", join(tree, "src", "short-link"));
  await symlink(`../${"x".repeat(90)}/${"y".repeat(200)}`, join(tree, "src", "long-link"));
  await symlink("/etc/passwd", join(tree, "abs-link"));
  for (let i = 0; i < 3000; i++) await writeFile(join(tree, "many", `file-${i}.txt`), `${i}\n`);
}

describe("ext4 reader and qcow2 chain reader on real images", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4r-");
  let tree: string;
  let seed: string;
  before(async () => {
    tree = join(dir(), "tree");
    await mkdir(tree);
    await makeTree(tree);
    seed = join(dir(), "seed.ext4");
    // Exactly the image pyro builds for a workspace (1 GiB: 4 KiB blocks, 64bit, flex_bg, metadata_csum, lazy inode tables).
    await buildSeedImage({ root: tree }, scanSeed({ root: tree }), 1, seed, join(dir(), "baseline.manifest"), dir());
  });

  it("walks a seed image as the agent walks its tree (order, types, modes, sizes, targets, times, hardlinks) and reads every file's bytes", () => {
    withExt4(seed, (fs) => {
      const walked = readerWalk(fs);
      const expected = hostWalk(tree);
      assert.deepEqual(
        walked.map((e) => ({
          path: e.path,
          type: e.type,
          mode: e.mode,
          size: e.type === "d" ? -1 : e.size,
          target: e.target,
          mtimeS: Number(e.mtimeNs / 1_000_000_000n),
        })),
        expected,
      );
      const byPath = new Map(walked.map((e) => [e.path, e]));
      assert.equal(byPath.get("linked")!.ino, byPath.get("src/also-linked")!.ino);
      assert.equal(byPath.get("linked")!.nlink, 2);
      for (const e of walked) if (e.type === "f") assert.equal(sha(fileContents(fs, e.inode)), sha([readFileSync(join(tree, e.path))]), e.path);
      // "subtree" order: the same entries, each directory's subtree right after it (a sorted pre-order walk).
      const preorder = (at: string): string[] =>
        readdirSync(join(tree, at), { encoding: "buffer" })
          .sort(Buffer.compare)
          .flatMap((name) => {
            const path = at ? `${at}/${name.toString()}` : name.toString();
            return lstatSync(join(tree, path)).isDirectory() ? [path, ...preorder(path)] : [path];
          });
      assert.deepEqual(
        [...fs.walk(fs.lookup("")!, { order: "subtree" })].map((e) => e.path),
        preorder(""),
      );
      // A subdirectory walks relative to itself.
      assert.deepEqual(
        readerWalk(fs, "src/deep").map((e) => e.path),
        ["er", "er/blob.bin"],
      );
      assert.equal(fs.lookup("nope/x"), undefined);
      assert.equal(fs.lookup("src/main.ts/x"), undefined);
    });
  });

  it("reads an overlay chain (qcow2 v3 on qcow2 v2 on raw, 4 KiB and 64 KiB clusters, zero clusters, a larger top) byte for byte as qemu-img does", () => {
    const base = join(dir(), "base.raw");
    writeFileSync(base, Buffer.concat([randomBytes(3 << 20), Buffer.alloc(1 << 20), randomBytes((4 << 20) - 512)]));
    const mid = join(dir(), "mid.qcow2");
    const top = join(dir(), "top.qcow2");
    execFileSync(qemuImg!, ["create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", "-b", base, "-F", "raw", mid]);
    const io = (file: string, command: string) => execFileSync(findExecutable("qemu-io")!, ["-f", "qcow2", "-c", command, file], { stdio: "ignore" });
    io(mid, "write -P 0x11 100k 300k");
    io(mid, "write -P 0x22 5M 8k");
    execFileSync(qemuImg!, ["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top, "12M"]);
    io(top, "write -P 0x33 200k 1M");
    io(top, "write -z 2M 128k");
    io(top, "write -P 0x44 9M 64k");
    io(top, "write -P 0x55 7M 1");
    const converted = join(dir(), "converted.raw");
    execFileSync(qemuImg!, ["convert", "-O", "raw", top, converted]);
    const disk = openDisk(top);
    try {
      assert.equal(disk.size, 12 << 20);
      const mine = Buffer.alloc(disk.size);
      disk.readSync(mine, 0);
      assert.ok(mine.equals(readFileSync(converted)));
      // Unaligned reads across cluster and layer boundaries agree too.
      const piece = Buffer.alloc(70_001);
      disk.readSync(piece, (2 << 20) - 33_333);
      assert.ok(piece.equals(mine.subarray((2 << 20) - 33_333, (2 << 20) - 33_333 + 70_001)));
    } finally {
      disk.close();
    }
  });

  it("holds a walk to its entry bound exactly, in either order (listed entries are what is counted)", () => {
    withExt4(seed, (fs) => {
      const total = readerWalk(fs).length;
      for (const order of ["manifest", "subtree"] as const) {
        assert.equal([...fs.walk(fs.lookup("")!, { order, maxEntries: total })].length, total, order);
        assert.throws(
          () => [...fs.walk(fs.lookup("")!, { order, maxEntries: total - 1 })],
          (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && e.message.includes(`more than ${total - 1} files`),
          order,
        );
      }
    });
  });

  it("walks a QEMU-written overlay of the seed image as the changed tree", async () => {
    const changed = join(dir(), "changed");
    execFileSync("cp", ["-a", tree, changed]);
    await writeFile(join(changed, "src", "main.ts"), "export const x = 2; // changed\n");
    await rm(join(changed, "many"), { recursive: true });
    await mkdir(join(changed, "new", "dir"), { recursive: true });
    await writeFile(join(changed, "new", "dir", "file"), randomBytes(200_000));
    const changedImage = join(dir(), "changed.ext4");
    await buildSeedImage({ root: changed }, scanSeed({ root: changed }), 1, changedImage, join(dir(), "changed.manifest"), dir());
    // Only the clusters that differ from the seed go into the overlay: QEMU's own qcow2 writer.
    const overlay = join(dir(), "overlay.qcow2");
    execFileSync(qemuImg!, ["convert", "-O", "qcow2", "-B", seed, "-F", "raw", changedImage, overlay]);
    withExt4(overlay, (fs) => {
      const walked = readerWalk(fs);
      assert.deepEqual(
        walked.map((e) => [e.path, e.type, e.mode, e.target]),
        hostWalk(changed).map((e) => [e.path, e.type, e.mode, e.target]),
      );
      for (const e of walked) if (e.type === "f") assert.equal(sha(fileContents(fs, e.inode)), sha([readFileSync(join(changed, e.path))]), e.path);
    });
  });

  it("reads committed journal blocks in place of the filesystem's (data and metadata), as a replay leaves them", () => {
    const image = join(dir(), "journaled.ext4");
    execFileSync("cp", ["--sparse=always", seed, image]);
    const before = Ext4Reader.open(openDisk(image));
    const root = before.lookup("")!;
    // The blob's first block and the root directory's first block.
    const blockSize = before.blockSize;
    const dataBlock = bmap(image, "src/deep/er/blob.bin");
    const rootBlock = bmap(image, "<2>");
    const rootBlockBytes = bytesOf(before, root).subarray(0, blockSize);
    // A new data block, and the root directory with 'src' renamed to 'sxc' (same length: the entries stay valid).
    const newData = join(dir(), "new-data");
    writeFileSync(newData, randomBytes(blockSize));
    const newRoot = join(dir(), "new-root");
    const renamed = Buffer.from(rootBlockBytes);
    const at = renamed.indexOf(Buffer.from("src"));
    renamed.write("sxc", at);
    writeFileSync(newRoot, renamed);
    execFileSync(debugfs!, ["-w", "-f", "-", image], {
      input: `jo\njw -b ${dataBlock} ${newData}\njc\njo\njw -b ${rootBlock} ${newRoot}\njc\n`,
      stdio: ["pipe", "ignore", "ignore"],
    });
    const fromJournal = Ext4Reader.open(openDisk(image));
    const replayed = join(dir(), "replayed.ext4");
    execFileSync("cp", ["--sparse=always", image, replayed]);
    execFileSync(debugfs!, ["-w", "-R", "journal_run", replayed], { stdio: "ignore" });
    const inPlace = Ext4Reader.open(openDisk(replayed));
    const list = (fs: Ext4Reader) => readerWalk(fs).map((e) => [e.path, e.type, e.ino, e.type === "f" ? sha(fileContents(fs, e.inode)) : ""]);
    const walked = list(fromJournal);
    assert.deepEqual(walked, list(inPlace));
    assert.ok(walked.some(([path]) => path === "sxc/main.ts"));
    const blobNow = bytesOf(fromJournal, fromJournal.lookup("sxc/deep/er/blob.bin")!);
    assert.equal(blobNow.length, 3 * 1024 * 1024 + 17);
    assert.ok(blobNow.subarray(0, blockSize).equals(readFileSync(newData)));
  });

  it("refuses a directory linked into itself, a name with '/', and an extent outside the disk, with a typed error", () => {
    const variant = (name: string, script: string) => {
      const image = join(dir(), `${name}.ext4`);
      execFileSync("cp", ["--sparse=always", seed, image]);
      execFileSync(debugfs!, ["-w", "-f", "-", image], { input: script, stdio: ["pipe", "ignore", "ignore"] });
      return Ext4Reader.open(openDisk(image));
    };
    const damaged = (e: unknown) => isPyroError(e, "DISK_IMAGE_INVALID") && !e.message.includes("\n");
    const cycle = variant("cycle", "ln <2> src/deep/loop\n");
    assert.throws(
      () => readerWalk(cycle),
      (e) => damaged(e) && /cycle/.test((e as Error).message),
    );
    const outside = variant("outside", "sif src/deep/er/blob.bin block[5] 0xfffffff0\n");
    assert.throws(() => {
      for (const e of readerWalk(outside)) if (e.type === "f") sha(fileContents(outside, e.inode));
    }, damaged);
    // A name with '/' cannot be made by any tool: patch the bytes of one.
    const slashed = join(dir(), "slashed.ext4");
    execFileSync("cp", ["--sparse=always", seed, slashed]);
    const block = bmap(slashed, "src");
    const bytes = Buffer.alloc(4096);
    const handle = openSync(slashed, "r+");
    readSync(handle, bytes, 0, 4096, block * 4096);
    const at = bytes.indexOf(Buffer.from("short-link"));
    assert.ok(at > 0);
    bytes.write("/", at + 5);
    writeSync(handle, bytes, 0, 4096, block * 4096);
    closeSync(handle);
    assert.throws(
      () => readerWalk(Ext4Reader.open(openDisk(slashed))),
      (e) => damaged(e) && /'\/' or NUL/.test((e as Error).message),
    );
  });
});

describe("ext4 and qcow2 readers on corrupted images (fast-check)", { skip }, () => {
  const dir = suiteTempDir("pyro-ext4f-");
  let small: Buffer;
  let qcow: Buffer;
  before(async () => {
    const tree = join(dir(), "tree");
    await mkdir(join(tree, "a", "b"), { recursive: true });
    for (let i = 0; i < 40; i++) await writeFile(join(tree, "a", `f${i}`), randomBytes(i * 300));
    await writeFile(join(tree, "a", "b", "big"), randomBytes(70_000));
    await symlink("a/f1", join(tree, "s"));
    await symlink("z".repeat(120), join(tree, "long"));
    await link(join(tree, "a", "f2"), join(tree, "hard"));
    // 4 MiB with pyro's feature set: small enough to copy per run, 1 KiB blocks so metadata sits in the first half MiB.
    const image = join(dir(), "small.ext4");
    execFileSync(mkfs!, ["-q", "-F", "-t", "ext4", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-d", tree, image, "4M"], {
      stdio: "ignore",
    });
    // Two committed transactions in the journal, so the journal scan is exercised too.
    writeFileSync(join(dir(), "blk"), randomBytes(1024));
    execFileSync(debugfs!, ["-w", "-f", "-", image], {
      input: `jo\njw -b 3000,3001 ${join(dir(), "blk")}\njc\njo\njw -r 3001\njc\n`,
      stdio: ["pipe", "ignore", "ignore"],
    });
    small = readFileSync(image);
    const overlay = join(dir(), "small.qcow2");
    execFileSync(qemuImg!, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", image, "-F", "raw", overlay]);
    execFileSync(findExecutable("qemu-io")!, ["-f", "qcow2", "-c", "write -P 0x7 1M 100k", overlay], { stdio: "ignore" });
    qcow = readFileSync(overlay);
  });

  /** Walks everything and reads every file: a list of sane paths, or a typed error. */
  function readAll(disk: DiskReader): string[] | "refused" {
    try {
      const fs = Ext4Reader.open(disk);
      const paths: string[] = [];
      let bytes = 0;
      for (const e of fs.walk(fs.inode(2))) {
        assert.ok(
          e.path.split("/").every((p) => p !== "" && p !== "." && p !== ".." && !p.includes("\0")),
          e.path,
        );
        paths.push(e.path);
        // Contents are bounded by the export's own rule (sizes summed against the disk); the property only needs them to end.
        if (e.type === "f" && bytes + e.size <= disk.size) for (const piece of fileContents(fs, e.inode)) bytes += piece.length;
      }
      return paths;
    } catch (error) {
      if (isPyroError(error, "DISK_IMAGE_INVALID") || isPyroError(error, "GUEST_OPERATION_FAILED")) return "refused";
      throw error;
    }
  }

  it("reads the clean image", () => {
    const result = readAll(memoryDisk(small));
    assert.ok(Array.isArray(result) && result.includes("a/b/big") && result.includes("hard"));
  });

  it("any corruption of the metadata area ends in entries or a typed error, quickly", () => {
    // Metadata of a 4 MiB, 1 KiB-block image: superblock, descriptors, bitmaps, inode table, directories, extent roots and the journal's start.
    const limit = Math.min(small.length, 1 << 20);
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat({ max: limit - 1 }), value: fc.integer({ min: 0, max: 255 }), wide: fc.boolean() }), { minLength: 1, maxLength: 12 }),
        (edits) => {
          const bytes = Buffer.from(small);
          for (const { at, value, wide } of edits) {
            bytes[at] = value;
            // Whole 32-bit fields set high: block numbers, counts and sizes out of range.
            if (wide && at + 4 <= bytes.length) bytes.writeUInt32LE(value * 0x01010101, at & ~3);
          }
          const started = Date.now();
          readAll(memoryDisk(bytes));
          assert.ok(Date.now() - started < 2000, "took over 2 s");
        },
      ),
      { numRuns: 400 },
    );
  });

  it("any corruption of a qcow2 overlay's header and tables ends in the disk's bytes or a typed error", () => {
    const file = join(dir(), "mutated.qcow2");
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat({ max: Math.min(qcow.length, 0x40000) - 1 }), value: fc.integer({ min: 0, max: 255 }) }), {
          minLength: 1,
          maxLength: 8,
        }),
        (edits) => {
          const bytes = Buffer.from(qcow);
          for (const { at, value } of edits) bytes[at] = value;
          writeFileSync(file, bytes);
          try {
            const disk = openDisk(file);
            try {
              const all = Buffer.alloc(Math.min(disk.size, 8 << 20));
              disk.readSync(all, 0);
            } finally {
              disk.close();
            }
          } catch (error) {
            if (isPyroError(error, "DISK_IMAGE_INVALID")) return;
            throw error;
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
