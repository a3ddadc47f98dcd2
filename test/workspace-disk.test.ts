import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmod, link, lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { Ext4Image } from "../src/workspaces/disk-image.js";
import { buildSeedImage, checkSeedFits, scanSeed, seedEntries } from "../src/workspaces/seed-image.js";
import { encodeManifest, parseManifest, type ManifestEntry } from "../src/workspaces/tree-manifest.js";
import { changedEntries } from "../src/workspaces/workspace-diff.js";
import { Redactor } from "../src/workspaces/secret-redaction.js";
import { redactTree, restoreHardlinks } from "../src/workspaces/workspace-export-redacted.js";
import { manifestEntry } from "./helpers/manifest-fixtures.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

const entry = manifestEntry;

describe("tree manifests (the guest's walk of /workspace is hostile input)", () => {
  it("round-trips what it encodes", () => {
    const name = fc.stringMatching(/^[^\0/]{1,12}$/).filter((s) => s !== "." && s !== "..");
    fc.assert(
      fc.property(fc.uniqueArray(name, { maxLength: 20 }), fc.constantFrom("f", "d", "l", "o"), (names, type) => {
        // Each name as a top-level entry of the type, and again inside a directory "sub".
        const top = names.map((p, i) =>
          entry(p === "sub" ? "sub2" : p, {
            type: type as ManifestEntry["type"],
            size: i,
            ctimeNs: BigInt(i) * 1_000_000_007n,
            target: type === "l" ? `t${i}` : "",
          }),
        );
        const entries = [
          ...top.filter((e) => e.path !== "sub2" || !names.includes("sub2")),
          entry("sub", { type: "d" }),
          ...names.map((p) => entry(`sub/${p}`)),
        ];
        assert.deepEqual(parseManifest(encodeManifest(entries)), entries);
      }),
      { numRuns: 100 },
    );
  });

  it("keeps names that are not UTF-8 apart (escaped), so two of them in one directory are not one name listed twice", () => {
    const record = (name: Buffer) => Buffer.concat([Buffer.from("f 644 1 0 0 5 1\0"), name, Buffer.from("\0\0")]);
    const parsed = parseManifest(
      Buffer.concat([record(Buffer.from("a\xff", "latin1")), record(Buffer.from("a\xfe", "latin1")), record(Buffer.from("a\u00ff"))]),
    );
    assert.deepEqual(
      parsed.map((e) => e.path),
      ["a\\xff", "a\\xfe", "a\u00ff"],
    );
  });

  it("refuses entries not below a directory listed before them (a symlink parent would be written through)", () => {
    const bytes = encodeManifest([entry("a", { type: "l", target: "/etc" }), entry("a/passwd")]);
    assert.throws(
      () => parseManifest(bytes),
      (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && /not below a directory/.test(e.message),
    );
    assert.throws(
      () => parseManifest(encodeManifest([entry("x/y")])),
      (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR"),
    );
    assert.equal(parseManifest(encodeManifest([entry("x", { type: "d" }), entry("x/y")])).length, 2);
  });

  it("any bytes parse to plain relative paths or fail with GUEST_PROTOCOL_ERROR, never anything else", () => {
    const piece = fc.oneof(
      fc.constantFrom("f 644 1 0 0 1 1\0", "d 755 0 0 0 2 2\0", "../x\0", "/abs\0", "a//b\0", "ok\0", "\0", "l 777 3 -1 -1 3 1\0", "f 99999999 1 0 0 0 0\0"),
      fc.string({ maxLength: 8 }),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
        try {
          for (const e of parseManifest(Buffer.from(pieces.join(""), "utf8"))) {
            assert.ok(e.path && !e.path.startsWith("/") && !e.path.split("/").some((p) => p === "" || p === "." || p === ".."), e.path);
          }
        } catch (error) {
          assert.ok(isPyroError(error, "GUEST_PROTOCOL_ERROR"), String(error));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("what changed since the seed image was built", () => {
  const built = 1_000n;
  it("finds added, deleted, type/mode/size/target changes and anything with a later ctime; directories only through their files", () => {
    const baseline = [
      entry("a"),
      entry("b"),
      entry("c", { mode: 0o600 }),
      entry("d"),
      entry("dir", { type: "d" }),
      entry("dir/x"),
      entry("l", { type: "l", target: "a" }),
      entry("same"),
    ];
    const current = [
      entry("a", { ctimeNs: 999n }), // untouched (mkfs time)
      entry("c", { mode: 0o700, ctimeNs: 999n }), // chmod
      entry("d", { size: 2, ctimeNs: 999n }), // size (a guest clock set back cannot hide it)
      entry("dir", { type: "d", ctimeNs: 5_000n }),
      entry("dir/x", { ctimeNs: 1_001n }), // rewritten in place, same size
      entry("empty", { type: "d", ctimeNs: 5_000n }), // a new empty dir is no change
      entry("l", { type: "l", target: "b", ctimeNs: 999n }),
      entry("new"),
      entry("same", { type: "d" }), // a file became a directory
    ];
    assert.deepEqual(
      changedEntries(encodeManifest(baseline), current, built).map((c) => `${c.status} ${c.path}`),
      ["deleted b", "modified c", "modified d", "modified dir/x", "modified l", "added new", "deleted same"],
    );
  });
});

describe("seed images built on the host (mkfs.ext4 -d in the sandbox)", () => {
  const dir = suiteTempDir("pyro-seed-unit-");

  it("builds from a path list without the rest of the tree, skipping (and reporting) what the sandbox cannot read", async () => {
    const root = join(dir(), "tree");
    await mkdir(join(root, "keep", "sub"), { recursive: true });
    await mkdir(join(root, "ignored"), { recursive: true });
    await writeFile(join(root, "keep", "sub", "a.txt"), "A\n");
    await writeFile(join(root, "keep", "b.sh"), "#!/bin/sh\n", { mode: 0o755 });
    await chmod(join(root, "keep", "b.sh"), 0o755);
    await writeFile(join(root, "ignored", "big.log"), "x".repeat(10_000));
    await writeFile(join(root, "secret.txt"), "no\n", { mode: 0o000 });
    await chmod(join(root, "secret.txt"), 0o000);
    await link(join(root, "keep", "sub", "a.txt"), join(root, "keep", "hard.txt"));
    await symlink("sub/a.txt", join(root, "keep", "link"));
    const source = { root, paths: ["keep/sub/a.txt", "keep/b.sh", "keep/hard.txt", "keep/link", "secret.txt", "missing/file"] };
    const scan = scanSeed(source);
    assert.deepEqual(scan.skipped, [
      { path: "secret.txt", reason: "file not readable" },
      { path: "missing", reason: "vanished before it could be read" },
    ]);
    assert.deepEqual(
      [...seedEntries(scan)].map((e) => e.path),
      ["keep", "keep/sub", "keep/sub/a.txt", "keep/b.sh", "keep/hard.txt", "keep/link"],
    );
    const out = join(dir(), "out");
    await mkdir(out, { mode: 0o700 });
    const image = await buildSeedImage(source, scan, 1, join(out, "seed.ext4"), join(out, "baseline.manifest"), out);
    const ext4 = new Ext4Image(image.path);
    const top = (await ext4.listInode(2))
      .map((e) => e.name)
      .filter((n) => n !== "." && n !== "..")
      .sort();
    assert.deepEqual(top, ["keep"]); // no lost+found, nothing ignored
    const found = await ext4.lookupMany(["keep/sub/a.txt", "keep/hard.txt", "keep/b.sh"]);
    assert.equal(found.get("keep/sub/a.txt")!.inode, found.get("keep/hard.txt")!.inode, "hardlinks stay hardlinks");
    assert.equal(found.get("keep/b.sh")!.mode & 0o777, 0o755);
    assert.deepEqual(
      parseManifest(execFileSync("cat", [image.manifestPath])).map((e) => e.path),
      [...seedEntries(scan)].map((e) => e.path),
    );
  });

  it("refuses, before building, a seed that cannot fit the disk, naming a size that would", async () => {
    const root = join(dir(), "big");
    await mkdir(root);
    await writeFile(join(root, "f"), "");
    execFileSync("truncate", ["-s", "3G", join(root, "f")]);
    const scan = scanSeed({ root });
    assert.throws(
      () => checkSeedFits(scan, 2),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /--disk-gib 4\)/.test(e.message),
    );
    checkSeedFits(scan, 4);
  });
});

describe("hardlinks restored in a dumped tree (the dump is the guest's disk, the manifest its agent's reply)", () => {
  const root = suiteTempDir("pyro-relink-");

  it("never unlinks or links through a symlink the dump holds where the manifest said directory", async () => {
    const tree = join(root(), "tree");
    const outside = join(root(), "outside");
    await mkdir(tree);
    await mkdir(outside);
    await writeFile(join(outside, "victim"), "host data");
    await writeFile(join(tree, "planted"), "guest data");
    // The manifest (taken before the pause, or simply lied) says d is a directory; on the disk d is a link out.
    await symlink(outside, join(tree, "d"));
    const manifest = [entry("planted", { ino: 7, nlink: 2 }), entry("d", { type: "d" }), entry("d/victim", { ino: 7, nlink: 2 })];
    await restoreHardlinks(tree, manifest, "");
    assert.equal(await readFile(join(outside, "victim"), "utf8"), "host data");
    assert.equal((await lstat(join(outside, "victim"))).nlink, 1);
    // The first name too: a link through a symlink would hand out a host file's inode.
    const tree2 = join(root(), "tree2");
    await mkdir(tree2);
    await symlink(outside, join(tree2, "d"));
    await writeFile(join(tree2, "other"), "guest data");
    await restoreHardlinks(tree2, [entry("d", { type: "d" }), entry("d/victim", { ino: 9, nlink: 2 }), entry("other", { ino: 9, nlink: 2 })], "");
    assert.equal(await readFile(join(tree2, "other"), "utf8"), "guest data");
    assert.equal((await lstat(join(outside, "victim"))).nlink, 1);
  });

  it("groups a manifest's 100k names claiming one inode in linear time (the guest's agent writes the manifest)", async () => {
    const tree = join(root(), "tree4");
    await mkdir(tree);
    // None of the names is in the dump: all the work is grouping them.
    const claims = Array.from({ length: 100_000 }, (_, i) => entry(`n${i}`, { ino: 5, nlink: 2 }));
    const started = Date.now();
    await restoreHardlinks(tree, claims, "");
    assert.ok(Date.now() - started < 3_000, `took ${Date.now() - started} ms`);
  });

  it("still relinks real names below real directories", async () => {
    const tree = join(root(), "tree3");
    await mkdir(join(tree, "sub"), { recursive: true });
    await writeFile(join(tree, "a"), "same");
    await writeFile(join(tree, "sub", "b"), "same");
    await restoreHardlinks(tree, [entry("a", { ino: 3, nlink: 2 }), entry("sub", { type: "d" }), entry("sub/b", { ino: 3, nlink: 2 })], "");
    assert.equal((await lstat(join(tree, "a"))).ino, (await lstat(join(tree, "sub", "b"))).ino);
  });
});

describe("redaction of a dumped tree (every name in it is the guest's)", () => {
  it("never writes through a symlink the dump holds next to a file it redacts", async () => {
    const root = await mkdtemp(join(tmpdir(), "pyro-redact-"));
    try {
      const tree = join(root, "tree");
      await mkdir(tree);
      await writeFile(join(root, "victim"), "host data");
      await writeFile(join(tree, "notes"), "token hunter2 here");
      await symlink(join(root, "victim"), join(tree, "notes.pyro-redacted"));
      await redactTree(tree, new Redactor({ S: "hunter2" }));
      assert.equal(await readFile(join(root, "victim"), "utf8"), "host data");
      assert.equal(await readFile(join(tree, "notes"), "utf8"), "token [REDACTED] here");
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe("seed names pyro cannot carry as text", () => {
  it("reports a name that is not UTF-8 as skipped and leaves it out of the image too (staging), never silently", async () => {
    const root = await mkdtemp(join(tmpdir(), "pyro-seed-utf8-"));
    try {
      await writeFile(Buffer.from(`${root}/bad\xff`, "latin1"), "x");
      await writeFile(join(root, "ok"), "y");
      const scan = scanSeed({ root });
      assert.deepEqual(
        [...seedEntries(scan)].map((e) => e.path),
        ["ok"],
      );
      assert.equal(scan.skipped.length, 1);
      assert.match(scan.skipped[0]!.reason, /UTF-8/);
      assert.equal(scan.needsStaging, true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
