import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { findExecutable } from "../src/process/host-command.js";
import { scanSeed } from "../src/workspaces/seed-image.js";

const mkfs = findExecutable("mkfs.ext4");
const debugfs = findExecutable("debugfs");
const skip = !mkfs || !debugfs ? "needs mkfs.ext4 and debugfs" : false;

const DIRECTORIES = 200;
const PER_DIRECTORY = 100;
const CHANGED = 50;
/**
 * Bytes allocated per entry that a diff's host side may make: the walk of the disk, the baseline
 * index and the comparison together (on this 20k-entry tree, start-up included). The code before
 * this bound made ~3.4 KB per entry here (2.7 KB on 200k entries), which on a 200k-entry tree grew
 * the young generation and the heap to a peak RSS of 220-320 MiB; the current code makes ~1.7 KB
 * here (1 KB on 200k entries).
 */
const MAX_ALLOCATED_BYTES_PER_ENTRY = 2500;
/**
 * Heap a diff holds per changed file until its page is shown. Holding both sides' entries as
 * objects cost ~440 B each (every file of 200k changed: 222 MiB peak RSS); a held change (~110 B) is a
 * path, its status and two numbers.
 */
const MAX_HELD_BYTES_PER_CHANGE = 300;

/**
 * Runs the diff's host side (index the baseline, walk the disk, compare) in a child whose young
 * generation is fixed at 1 MiB, so each minor GC stands for ~1 MiB allocated; reports the changes
 * found and the minor GCs counted.
 */
const CHILD = `
import { readFileSync } from "node:fs";
import { PerformanceObserver, constants } from "node:perf_hooks";
const [src, image, manifest, builtAt] = process.argv.slice(1);
const { Ext4Reader } = await import(src + "/storage/ext4-reader.js");
const { openDisk } = await import(src + "/storage/qcow2-reader.js");
const { ManifestIndex, heldChanges } = await import(src + "/workspaces/workspace-diff.js");
let minor = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
}).observe({ entryTypes: ["gc"] });
const settle = () => new Promise((r) => setTimeout(r, 50));
await settle();
const before = minor;
const index = new ManifestIndex(readFileSync(manifest));
const disk = openDisk(image);
const reader = Ext4Reader.open(disk);
const keep = (entry) => entry.ino;
const changes = heldChanges(index, reader.walk(reader.lookup("")), BigInt(builtAt), keep);
await settle();
const minorGcs = minor - before;
// Every file changed (a baseline older than every ctime): what the diff holds for its pages.
globalThis.gc();
const heapBefore = process.memoryUsage().heapUsed;
const all = heldChanges(index, reader.walk(reader.lookup("")), 0n, keep);
globalThis.gc();
const heldBytes = process.memoryUsage().heapUsed - heapBefore;
disk.close();
console.log(JSON.stringify({ entries: index.count, changes: changes.map((c) => c.status + " " + c.path), minorGcs, all: all.length, heldBytes }));
`;

describe("diff's host side on a many-entry disk", { skip }, () => {
  let work: string;
  let image: string;
  let manifest: string;
  let builtAt: bigint;
  const changed: string[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pyro-diff-memory-"));
    const tree = join(work, "tree");
    const body = Buffer.alloc(100, 0x61);
    for (let d = 0; d < DIRECTORIES; d++) {
      mkdirSync(join(tree, `d${d}`), { recursive: true });
      for (let f = 0; f < PER_DIRECTORY; f++) writeFileSync(join(tree, `d${d}`, `f${f}.txt`), body);
    }
    manifest = join(work, "baseline.manifest");
    writeFileSync(manifest, scanSeed({ root: tree }).manifest.bytes());
    image = join(work, "disk.ext4");
    // As the seed image is built (seed-image.ts), without the sandbox.
    execFileSync(mkfs!, ["-q", "-F", "-t", "ext4", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-d", tree, image, "1G"]);
    builtAt = BigInt(Date.now()) * 1_000_000n;
    execFileSync(debugfs!, ["-w", "-R", "rmdir lost+found", image], { stdio: "ignore" });
    // Changed files: a ctime after the build, as any change in the guest sets.
    for (let i = 0; i < CHANGED; i++) changed.push(`d${(i * 7) % DIRECTORIES}/f${(i * 13) % PER_DIRECTORY}.txt`);
    writeFileSync(join(work, "changes.cmd"), changed.map((path) => `sif ${path} ctime 20300101120000\n`).join(""));
    execFileSync(debugfs!, ["-w", "-f", join(work, "changes.cmd"), image], { stdio: "ignore" });
  });

  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("finds the changed files making at most ~2.5 KB of garbage per entry, and holds a few hundred bytes per change (what keeps a 200k-entry diff under 200 MB)", () => {
    const src = new URL("../src", import.meta.url).pathname;
    const out = execFileSync(
      process.execPath,
      ["--max-semi-space-size=1", "--min-semi-space-size=1", "--expose-gc", "--input-type=module", "-e", CHILD, src, image, manifest, String(builtAt)],
      { encoding: "utf8" },
    );
    const result = JSON.parse(out.trim().split("\n").pop()!) as { entries: number; changes: string[]; minorGcs: number; all: number; heldBytes: number };
    assert.equal(result.entries, DIRECTORIES * (PER_DIRECTORY + 1));
    assert.deepEqual(
      result.changes,
      [...new Set(changed)].sort().map((path) => `modified ${path}`),
    );
    const perEntry = (result.minorGcs * 1024 * 1024) / result.entries;
    assert.ok(
      perEntry <= MAX_ALLOCATED_BYTES_PER_ENTRY,
      `${perEntry.toFixed(0)} bytes allocated per entry (${result.minorGcs} minor GCs of a 1 MiB young generation)`,
    );
    // With every file changed, what is held until the page is shown is a path, a status and two numbers each.
    assert.equal(result.all, DIRECTORIES * PER_DIRECTORY);
    const perChange = result.heldBytes / result.all;
    assert.ok(perChange <= MAX_HELD_BYTES_PER_CHANGE, `${perChange.toFixed(0)} bytes of heap held per change`);
  });
});
