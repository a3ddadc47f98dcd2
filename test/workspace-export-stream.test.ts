import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { chmod, link, mkdir, mkdtemp, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { findExecutable } from "../src/process/host-command.js";
import { Ext4Reader } from "../src/storage/ext4-reader.js";
import { type DiskReader, openDisk } from "../src/storage/qcow2-reader.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";
import { buildSeedImage, scanSeed } from "../src/workspaces/seed-image.js";
import type { ManifestEntry } from "../src/workspaces/tree-manifest.js";
import { writeFilesystemTar } from "../src/workspaces/workspace-export.js";
import { gnuHeaderBytes } from "../src/workspaces/workspace-export-redacted.js";

// The export's stream without a VM: a seed image built as pyro builds one, read by the ext4 reader
// into caller buffers (contentReader) and written as a tar, checked against the tree it was made from.

const mkfs = findExecutable("mkfs.ext4");
const gnuTar = findExecutable("tar");
const skip = !mkfs || !gnuTar || !findExecutable("bwrap") ? "needs mkfs.ext4, tar and bwrap" : false;

/** Sizes around the export's 1 MiB write buffer and the 4 KiB block, so pieces split at every kind of edge. */
const AWKWARD_SIZES = [0, 1, 511, 512, 513, 4095, 4096, 4097, (1 << 20) - 513, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 17];

async function makeTree(tree: string): Promise<void> {
  await mkdir(join(tree, "src", "deep"), { recursive: true });
  await mkdir(join(tree, "empty"));
  for (const size of AWKWARD_SIZES) await writeFile(join(tree, "src", `size-${size}`), randomBytes(size));
  await writeFile(join(tree, "src", "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(tree, "src", "run.sh"), 0o755);
  await writeFile(join(tree, "src", "setuid"), "x");
  await chmod(join(tree, "src", "setuid"), 0o4755);
  // A hole in the middle and one at the end: read as zeros.
  await writeFile(join(tree, "sparse"), "");
  await truncate(join(tree, "sparse"), 2 * 1024 * 1024);
  execFileSync("dd", ["if=/dev/urandom", `of=${join(tree, "sparse")}`, "bs=4096", "seek=100", "count=3", "conv=notrunc"], { stdio: "ignore" });
  await writeFile(join(tree, "linked"), "two names\n");
  await link(join(tree, "linked"), join(tree, "src", "deep", "also-linked"));
  await symlink("run.sh", join(tree, "src", "short-link"));
  await symlink(`../${"x".repeat(90)}/${"y".repeat(200)}`, join(tree, "src", "long-link"));
  // Past ustar's 100 bytes: a pax header.
  await writeFile(join(tree, "src", "deep", "n".repeat(200)), "long name\n");
  for (let i = 0; i < 300; i++) await writeFile(join(tree, "src", `small-${i}.txt`), `${i}\n`.repeat(i));
}

/** Every entry under `root`: type, mode, contents or target, and which names share an inode. */
function describeTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const inodes = new Map<number, string>();
  const visit = (dir: string) => {
    for (const name of readdirSync(join(root, dir)).sort()) {
      const path = dir ? `${dir}/${name}` : name;
      const st = lstatSync(join(root, path));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.set(path, `d ${mode}`);
        visit(path);
      } else if (st.isSymbolicLink()) out.set(path, `l ${readlinkSync(join(root, path))}`);
      else {
        const first = st.nlink > 1 ? inodes.get(st.ino) : undefined;
        if (st.nlink > 1 && !first) inodes.set(st.ino, path);
        out.set(path, `f ${mode} ${st.size} ${readFileSync(join(root, path)).toString("base64")} ${first ? `linked` : ""}`);
      }
    }
  };
  visit("");
  return out;
}

describe("export stream from a disk image", { skip }, () => {
  const dir = suiteTempDir("pyro-export-stream-");
  let tree: string;
  let disk: DiskReader;
  let fs: Ext4Reader;
  before(async () => {
    tree = join(dir(), "tree");
    await mkdir(tree);
    await makeTree(tree);
    const seed = join(dir(), "seed.ext4");
    await buildSeedImage({ root: tree }, scanSeed({ root: tree }), 1, seed, join(dir(), "baseline.manifest"), dir());
    disk = openDisk(seed);
    fs = Ext4Reader.open(disk);
  });
  after(() => disk?.close());

  it("contentReader fills buffers of any size with a file's bytes, holes as zeros, whole blocks until the end", () => {
    const files = [...fs.walk(fs.lookup("")!)].filter((e) => e.type === "f");
    fc.assert(
      fc.property(fc.constantFrom(...files), fc.array(fc.integer({ min: 1, max: 3 * fs.blockSize + 7 }), { minLength: 1, maxLength: 12 }), (file, sizes) => {
        const expected = readFileSync(join(tree, file.path));
        const read = fs.contentReader(file.inode);
        const pieces: Buffer[] = [];
        let left = file.size;
        for (let i = 0; left > 0; i++) {
          // The sizes drawn, then whole buffers (as the export hands in) to finish the file.
          const target = Buffer.alloc(i < sizes.length ? sizes[i]! : 1 << 20, 0xee);
          const n = read(target);
          assert.ok(n <= left && n <= target.length);
          if (n < left) assert.equal(n % fs.blockSize, 0, "a piece that does not end the file is whole blocks");
          if (n === 0) assert.ok(target.length < fs.blockSize && target.length < left, "0 only for a target smaller than a block");
          pieces.push(Buffer.from(target.subarray(0, n)));
          left -= n;
        }
        assert.equal(read(Buffer.alloc(fs.blockSize)), 0, "nothing after the end");
        assert.ok(Buffer.concat(pieces).equals(expected), file.path);
      }),
      { numRuns: 60 },
    );
  });

  it("writes a tar GNU tar extracts to the tree: contents, modes (setuid dropped), symlinks, hardlinks, long names", async () => {
    const archive = join(dir(), "out.tar");
    await writeFilesystemTar(fs, fs.lookup("")!, "/workspace", disk.size, archive);
    const extracted = join(dir(), "extracted");
    await mkdir(extracted);
    execFileSync(gnuTar!, ["-x", "-p", "-f", archive, "-C", extracted]);
    const expected = describeTree(tree);
    expected.set("src/setuid", expected.get("src/setuid")!.replace("f 4755", "f 755"));
    assert.deepEqual(describeTree(extracted), expected);
    // Whole 512-byte blocks, ending in the two zero blocks.
    const bytes = readFileSync(archive);
    assert.equal(bytes.length % 512, 0);
    assert.ok(bytes.subarray(bytes.length - 1024).equals(Buffer.alloc(1024)));
  });

  it("refuses to overwrite an existing file", async () => {
    const archive = join(dir(), "taken.tar");
    await writeFile(archive, "mine");
    await assert.rejects(writeFilesystemTar(fs, fs.lookup("")!, "/workspace", disk.size, archive), /EEXIST/);
    assert.equal(readFileSync(archive, "utf8"), "mine");
  });

  it("bounds the tar's headers: a few thousand hardlinks deep under a long path would repeat it in every header", async () => {
    const deepTree = join(dir(), "deep-tree");
    // ~3000-byte directory path (15 names of 200 bytes), one file, 2000 more names for it.
    const deep = join(deepTree, ...Array.from({ length: 15 }, (_, i) => `${i}`.padEnd(200, "d")));
    await mkdir(deep, { recursive: true });
    await writeFile(join(deep, "f"), "x");
    for (let i = 0; i < 2000; i++) await link(join(deep, "f"), join(deep, `l${i}`));
    const image = join(dir(), "deep.ext4");
    await buildSeedImage({ root: deepTree }, scanSeed({ root: deepTree }), 1, image, join(dir(), "deep.manifest"), dir());
    const deepDisk = openDisk(image);
    try {
      const deepFs = Ext4Reader.open(deepDisk);
      // Each link's header holds its path and its target's (~6 KB with pax): ~14 MB from ~40 KB of directory entries.
      const bounded = join(dir(), "deep-bounded.tar");
      await assert.rejects(writeFilesystemTar(deepFs, deepFs.lookup("")!, "/workspace", deepDisk.size, bounded, 4 << 20), (e) => {
        assert.ok(isPyroError(e, "GUEST_OPERATION_FAILED"), String(e));
        assert.match((e as Error).message, /more than 4194304 bytes of tar headers/);
        return true;
      });
      const whole = join(dir(), "deep-whole.tar");
      await writeFilesystemTar(deepFs, deepFs.lookup("")!, "/workspace", deepDisk.size, whole);
      assert.ok(lstatSync(whole).size > 10 << 20, "the headers are what the bound is for");
      const extracted = join(dir(), "deep-extracted");
      await mkdir(extracted);
      execFileSync(gnuTar!, ["-x", "-f", whole, "-C", extracted]);
      assert.deepEqual(describeTree(extracted), describeTree(deepTree));
    } finally {
      deepDisk.close();
    }
  });
});

describe("the redacted export's header estimate", { skip: gnuTar ? false : "needs tar" }, () => {
  it("is what GNU tar (--format=gnu) writes for names and link targets short and long", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-gnu-headers-"));
    try {
      const tree = join(dir, "tree");
      const long = "l".repeat(150);
      await mkdir(join(tree, long, "sub"), { recursive: true });
      await writeFile(join(tree, long, "sub", "f".repeat(120)), randomBytes(700));
      await writeFile(join(tree, "short"), "x");
      await symlink("t".repeat(200), join(tree, "long-target"));
      await symlink("short", join(tree, "short-target"));
      await writeFile(join(tree, `a${"h".repeat(130)}`), "linked");
      await link(join(tree, `a${"h".repeat(130)}`), join(tree, `b${"h".repeat(130)}`));
      const entries: ManifestEntry[] = [];
      const visit = (rel: string) => {
        for (const name of readdirSync(join(tree, rel)).sort()) {
          const path = rel ? `${rel}/${name}` : name;
          const st = lstatSync(join(tree, path));
          const type = st.isDirectory() ? "d" : st.isSymbolicLink() ? "l" : "f";
          const target = type === "l" ? readlinkSync(join(tree, path)) : "";
          entries.push({
            path,
            type,
            mode: st.mode & 0o7777,
            size: type === "f" ? st.size : 0,
            mtimeNs: 0n,
            ctimeNs: 0n,
            ino: st.ino,
            nlink: st.nlink,
            target,
          });
          if (type === "d") visit(path);
        }
      };
      visit("");
      const archive = join(dir, "out.tar");
      execFileSync(gnuTar!, ["-c", "-f", archive, "-C", tree, "--format=gnu", "."]);
      // The estimate, the root's own header, file bodies in whole blocks (a hardlink's second name has none), the end.
      const seenInodes = new Set<number>();
      let bodies = 0;
      for (const e of entries) {
        if (e.type !== "f" || seenInodes.has(e.ino)) continue;
        seenInodes.add(e.ino);
        bodies += Math.ceil(e.size / 512) * 512;
      }
      // Where GNU tar's end (its first block of NULs) is: every header and body before it.
      const listing = execFileSync(gnuTar!, ["-t", "-v", "-R", "-f", archive], { encoding: "utf8" }).trim().split("\n");
      const end = /^block (\d+): \*\* Block of NULs \*\*$/.exec(listing.at(-1)!);
      assert.ok(end, listing.at(-1));
      const headerBytes = Number(end[1]) * 512 - bodies - 512; // less the root's own header
      const estimate = entries.reduce((sum, e) => sum + gnuHeaderBytes(e), 0);
      // Over by one record only: each name of the hardlinked pair is counted as a link, and tar
      // writes the first as the file (no target record: 2 blocks for its 134-byte one).
      assert.equal(estimate - headerBytes, 1024);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
