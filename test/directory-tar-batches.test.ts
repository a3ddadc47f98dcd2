import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { link, mkdir, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Parser, type ReadEntry } from "tar";
import type { ArchiveSummary } from "../src/workspaces/archive-safety.js";
import { directoryTarBatches, FileTooLargeForBatch, PUSH_BATCH_BYTES } from "../src/workspaces/directory-tar-batches.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

interface Seen {
  path: string;
  type: string;
  mode: number;
  size: number;
  mtime: number;
  linkpath: string | undefined;
  data: Buffer;
}

/** Every entry of one batch, read back with node-tar (strict: a malformed header fails the test). */
async function entriesOf(batch: Buffer): Promise<Seen[]> {
  const out: Seen[] = [];
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({ strict: true });
    parser.on("entry", (e: ReadEntry) => {
      const chunks: Buffer[] = [];
      e.on("data", (c: Buffer) => chunks.push(c));
      e.on("end", () =>
        out.push({
          path: e.path,
          type: e.type,
          mode: (e.mode ?? 0) & 0o7777,
          size: e.size ?? 0,
          mtime: e.mtime?.getTime() ?? 0,
          linkpath: e.linkpath,
          data: Buffer.concat(chunks),
        }),
      );
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    parser.end(batch);
  });
  return out;
}

async function collect(root: string, maxFileBytes = 1 << 30): Promise<{ batches: Buffer[]; summary: ArchiveSummary }> {
  const summary: ArchiveSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  const batches: Buffer[] = [];
  for await (const b of directoryTarBatches(root, summary, maxFileBytes)) batches.push(b);
  return { batches, summary };
}

describe("a host directory as tar batches for the guest (sync push)", () => {
  const root = suiteTempDir("pyro-batches-");

  it("packs files, modes, times, directories, symlinks, hardlinks and long names; skips FIFOs", async () => {
    const tree = join(root(), "tree");
    const long = `${"n".repeat(120)}/${"m".repeat(200)}.txt`;
    await mkdir(join(tree, "src", "empty"), { recursive: true });
    await mkdir(join(tree, "n".repeat(120)));
    await writeFile(join(tree, "src", "run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
    await utimes(join(tree, "src", "run.sh"), 1_500_000_000, 1_500_000_000);
    await writeFile(join(tree, long), "deep");
    await symlink("../etc/passwd", join(tree, "src", "up"));
    await symlink("/absolute/target", join(tree, "abs"));
    await link(join(tree, "src", "run.sh"), join(tree, "zz-same-as-run"));
    execFileSync("mkfifo", [join(tree, "pipe")]);
    const { batches, summary } = await collect(tree);
    assert.equal(batches.length, 1);
    const entries = new Map((await entriesOf(batches[0]!)).map((e) => [e.path.replace(/^\.\//, "").replace(/\/$/, ""), e]));
    assert.deepEqual([...entries.keys()].sort(), ["abs", "n".repeat(120), long, "zz-same-as-run", "src", "src/empty", "src/run.sh", "src/up"].sort());
    const run = entries.get("src/run.sh")!;
    assert.deepEqual([run.type, run.mode, run.mtime, run.data.toString()], ["File", 0o755, 1_500_000_000_000, "#!/bin/sh\necho hi\n"]);
    assert.equal(entries.get(long)!.data.toString(), "deep");
    assert.deepEqual([entries.get("src/up")!.type, entries.get("src/up")!.linkpath], ["SymbolicLink", "../etc/passwd"]);
    assert.equal(entries.get("abs")!.linkpath, "/absolute/target");
    // The second name of a file comes after the first, as a hardlink to it (the walk is sorted).
    assert.deepEqual([entries.get("zz-same-as-run")!.type, entries.get("zz-same-as-run")!.linkpath], ["Link", "./src/run.sh"]);
    assert.equal(entries.get("src/empty")!.type, "Directory");
    assert.deepEqual(summary, { files: 3, directories: 3, symlinks: 2, bytes: 18 + 4 });
  });

  it("closes a batch at the batch size, sends a big file alone, and stops at a file too big for one request", async () => {
    const tree = join(root(), "big");
    await mkdir(tree);
    const small = Buffer.alloc(1000, 7);
    for (let i = 0; i < 3; i++) await writeFile(join(tree, `a${i}`), small);
    await writeFile(join(tree, "b-big"), Buffer.alloc(PUSH_BATCH_BYTES + 1, 1));
    await writeFile(join(tree, "c-after"), small);
    const { batches, summary } = await collect(tree);
    const names = await Promise.all(batches.map(async (b) => (await entriesOf(b)).map((e) => e.path)));
    assert.deepEqual(names, [["./a0", "./a1", "./a2"], ["./b-big"], ["./c-after"]]);
    for (const b of batches) assert.ok(b.length <= PUSH_BATCH_BYTES + 1 + 4096, `batch of ${b.length} bytes`);
    assert.equal(summary.bytes, 4000 + PUSH_BATCH_BYTES + 1);
    await assert.rejects(collect(tree, PUSH_BATCH_BYTES), (e) => e instanceof FileTooLargeForBatch && e.path === join(tree, "b-big"));
  });
});
