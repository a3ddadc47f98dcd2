import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError, PyroError } from "../src/errors.js";
import { findExecutable } from "../src/process/host-command.js";
import { entryType, Ext4Image, parseLongListing, splitSections, unescapeDebugfsName } from "../src/workspaces/disk-image.js";
import { listImage, readImage } from "../src/workspaces/workspace-disk.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

const mkfs = findExecutable("mkfs.ext4");

/** A guest-like tree: /workspace with files, a subdir, and links that point out of it. */
async function makeImage(dir: string): Promise<string> {
  const tree = join(dir, "tree");
  await mkdir(join(tree, "workspace", "docs", "deep"), { recursive: true });
  await mkdir(join(tree, "etc"), { recursive: true });
  await writeFile(join(tree, "etc", "shadow"), "root:SECRET-HASH:19000::::::\n");
  await writeFile(join(tree, "workspace", "docs", "a.txt"), "hello offline\n");
  await writeFile(join(tree, "workspace", "docs", "deep", "b.bin"), randomBytes(5000));
  await writeFile(join(tree, "workspace", 'odd\nname"q\\x'), "odd\n");
  await writeFile(join(tree, "workspace", "ünï"), "utf8 name\n");
  await symlink("/", join(tree, "workspace", "root"));
  await symlink("/etc", join(tree, "workspace", "etc"));
  await symlink("docs", join(tree, "workspace", "rel"));
  const image = join(dir, "disk.raw");
  execFileSync(mkfs!, ["-q", "-F", "-d", tree, image, "8M"], { stdio: "ignore" });
  return image;
}

const outside = (e: unknown) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE") && /symbolic link/.test(e.message);

describe("offline disk image reading (debugfs in a sandbox, inode walk)", {
  skip: !mkfs || !findExecutable("bwrap") || !findExecutable("debugfs") ? "needs mkfs.ext4, debugfs and bwrap" : false,
}, () => {
  const dir = suiteTempDir("pyro-diskimg-");
  let image: Ext4Image;
  before(async () => {
    image = new Ext4Image(await makeImage(dir()));
  });

  it("lists and reads files under /workspace, names with quotes, newlines and UTF-8 included", async () => {
    const { entries } = await listImage(image, "/workspace", true);
    const paths = entries.map((e) => `${e.path}:${e.type}`).sort();
    assert.deepEqual(
      paths,
      [
        "/workspace/docs/a.txt:file",
        "/workspace/docs/deep/b.bin:file",
        "/workspace/docs/deep:directory",
        "/workspace/docs:directory",
        "/workspace/etc:symlink",
        "/workspace/lost+found:directory",
        '/workspace/odd\nname"q\\x:file',
        "/workspace/rel:symlink",
        "/workspace/root:symlink",
        "/workspace/ünï:file",
      ]
        .filter((p) => !p.includes("lost+found"))
        .sort(),
    );
    assert.equal((await readImage(image, "/workspace/docs/a.txt", 1000)).data.toString(), "hello offline\n");
    assert.equal((await readImage(image, '/workspace/odd\nname"q\\x', 1000)).data.toString(), "odd\n");
    assert.equal((await readImage(image, "/workspace/ünï", 1000)).data.toString(), "utf8 name\n");
    const part = await readImage(image, "/workspace/docs/deep/b.bin", 100);
    assert.equal(part.data.length, 100);
    assert.equal(part.size, 5000);
    assert.equal(part.truncated, true);
  });

  it("never follows a symlink the guest made, in the middle of a path or at its end", async () => {
    await assert.rejects(readImage(image, "/workspace/root/etc/shadow", 1000), outside);
    await assert.rejects(readImage(image, "/workspace/etc/shadow", 1000), outside);
    await assert.rejects(readImage(image, "/workspace/etc", 1000), outside);
    await assert.rejects(readImage(image, "/workspace/rel/a.txt", 1000), outside);
    await assert.rejects(listImage(image, "/workspace/root", false), outside);
    await assert.rejects(listImage(image, "/workspace/etc", true), outside);
    await assert.rejects(readImage(image, "/workspace/nope", 10), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /does not exist/.test(e.message));
  });

  it("treats damaged images as hostile: each run answers or fails clearly, in time, and writes nothing on the host", { timeout: 600_000 }, async () => {
    const pristine = await readFile(join(dir(), "disk.raw"));
    const canary = join(dir(), "canary");
    await mkdir(canary);
    await writeFile(join(canary, "keep.txt"), "unchanged");
    const snapshotHost = async () => {
      const names = (await readdir(dir())).sort();
      const canaryText = await readFile(join(canary, "keep.txt"), "utf8");
      return JSON.stringify({ names, canaryText });
    };
    const before = await snapshotHost();
    // Seeded, so a failure reproduces; 20 images, ~40 flipped bytes each in the first 256 KiB
    // (superblock, group descriptors, bitmaps, inode table, directory blocks of a small image).
    let seed = 0x5eed;
    const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    const outcomes: string[] = [];
    for (let run = 0; run < 20; run++) {
      const bytes = Buffer.from(pristine);
      for (let k = 0; k < 40; k++) bytes[1024 + (next() % (256 * 1024 - 1024))] = next() & 0xff;
      const mutated = join(dir(), `mutated-${run}.raw`);
      await writeFile(mutated, bytes);
      const img = new Ext4Image(mutated);
      const started = Date.now();
      for (const op of [() => listImage(img, "/workspace", true), () => readImage(img, "/workspace/docs/a.txt", 4096)]) {
        try {
          await op();
          outcomes.push("ok");
        } catch (error) {
          assert.ok(error instanceof PyroError, `run ${run}: ${String(error)}`);
          assert.ok(error.message.length > 0 && !error.message.includes("\n"), `run ${run}: one clear line: ${error.message}`);
          outcomes.push(error.code);
        }
      }
      assert.ok(Date.now() - started < 130_000, `run ${run} finished within the deadlines`);
      assert.equal(
        createHash("sha256")
          .update(await readFile(mutated))
          .digest("hex"),
        createHash("sha256").update(bytes).digest("hex"),
        "the image is read-only to the tool",
      );
      await rm(mutated);
    }
    assert.equal(await snapshotHost(), before, "nothing outside the sandbox changed");
    assert.ok(outcomes.length === 40, outcomes.join(","));
    console.log(`damaged images: ${outcomes.filter((o) => o === "ok").length} answered, ${outcomes.filter((o) => o !== "ok").length} failed clearly`);
  });
});

describe("debugfs output parsing (untrusted names)", () => {
  it("unescapes what debugfs escapes, for any name", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), (bytes) => {
        const escaped = [...bytes]
          .map((b) => (b < 0x20 || b >= 0x7f || b === 0x5c ? `\\x${b.toString(16).padStart(2, "0")}` : String.fromCharCode(b)))
          .join("");
        assert.equal(unescapeDebugfsName(escaped), Buffer.from(bytes).toString("utf8"));
      }),
      { numRuns: 300 },
    );
  });

  it("one line is one entry: names cannot inject entries", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ minLength: 1, maxLength: 30 }), { maxLength: 8 }), (names) => {
        const lines = names.map((name, i) => {
          const escaped = [...Buffer.from(name, "utf8")]
            .map((b) => (b < 0x20 || b >= 0x7f || b === 0x5c ? `\\x${b.toString(16).padStart(2, "0")}` : String.fromCharCode(b)))
            .join("");
          return `  ${100 + i}  100644 (1)      0      0      12 26-Nov-2026 03:13 ${escaped}`;
        });
        const parsed = parseLongListing(lines.join("\n"));
        const expected = names.filter((n) => n !== "." && n !== ".." && !n.includes("/") && !n.includes("\0"));
        assert.deepEqual(
          parsed.map((e) => e.name),
          expected,
        );
        assert.ok(parsed.every((e) => entryType(e.mode) === "file"));
      }),
      { numRuns: 200 },
    );
  });

  it("splits a script's output at the echoed commands only", () => {
    const text = "debugfs: ls -l <2>\n   12  100644 (1) 0 0 1 1-Jan-2020 00:00 a\n\ndebugfs: ls -l <12>\n\n";
    const sections = splitSections(text, ["ls -l <2>", "ls -l <12>"]);
    assert.equal(parseLongListing(sections.get("ls -l <2>")!).length, 1);
    assert.equal(parseLongListing(sections.get("ls -l <12>")!).length, 0);
  });
});
