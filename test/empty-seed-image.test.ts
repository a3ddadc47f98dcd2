import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { emptySeedImage } from "../src/workspaces/empty-seed-image.js";
import { diskBytes } from "../src/workspaces/seed-image.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const cacheDir = join(testPaths.cacheDir, "empty-seeds");

async function workspaceDir(name: string): Promise<string> {
  const dir = join(testPaths.stateDir, "ws-test", name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

async function give(name: string, gib = 1) {
  const dir = await workspaceDir(name);
  const image = await emptySeedImage(testPaths, gib, join(dir, "seed.ext4"), join(dir, "baseline.manifest"), dir);
  return { dir, image, st: await lstat(image.path) };
}

describe("the empty /workspace image, built once per disk size", () => {
  it("is one read-only empty ext4, linked into every workspace of that size", async () => {
    const a = await give("a");
    const b = await give("b");
    assert.equal(a.st.ino, b.st.ino, "both workspaces link the same image");
    assert.ok(b.st.nlink >= 3, "the cache holds a link too");
    assert.equal(a.st.mode & 0o777, 0o400);
    assert.equal(a.st.size, diskBytes(1));
    assert.ok(a.st.blocks * 512 < 64 * 2 ** 20, "sparse");
    assert.equal((await readFile(a.image.manifestPath)).length, 0, "an empty baseline");
    assert.ok(a.image.builtAtNs > 0n && a.image.builtAtNs <= BigInt(Date.now()) * 1_000_000n);
    const listing = spawnSync("debugfs", ["-R", "ls -l /", a.image.path], { encoding: "utf8" });
    assert.equal(listing.status, 0, listing.stderr);
    const names = listing.stdout
      .trim()
      .split("\n")
      .map((l) => l.trim().split(/\s+/).at(-1));
    assert.deepEqual(names.sort(), [".", ".."], "no lost+found, nothing else");
    // Another size is another image.
    const c = await give("c", 2);
    assert.notEqual(c.st.ino, a.st.ino);
    assert.equal(c.st.size, diskBytes(2));
    // Deleting a workspace removes its link only.
    await rm(a.dir, { recursive: true });
    assert.equal((await lstat(b.image.path)).ino, b.st.ino);
    assert.deepEqual(
      (await readdir(cacheDir)).filter((n) => n.startsWith(".build-")),
      [],
      "no build leftovers",
    );
  });

  it("never links what is not pyro's image: a symlink or a wrong file in the cache is replaced by a fresh build", async () => {
    const victim = join(testPaths.stateDir, "victim.ext4");
    await writeFile(victim, "not an image", { mode: 0o400 });
    const [cached] = (await readdir(cacheDir)).filter((n) => n.endsWith("-1g.ext4"));
    assert.ok(cached);
    await rm(join(cacheDir, cached));
    await symlink(victim, join(cacheDir, cached));
    const d = await give("d");
    assert.ok(d.st.isFile() && d.st.size === diskBytes(1), "a real image, not the symlink's target");
    assert.equal((await readFile(victim, "utf8")).trim(), "not an image");
    await rm(join(cacheDir, cached));
    await writeFile(join(cacheDir, cached), "short", { mode: 0o400 });
    const e = await give("e");
    assert.equal(e.st.size, diskBytes(1));
    assert.equal((await lstat(join(cacheDir, cached))).ino, e.st.ino, "the cache holds the rebuilt image");
  });

  it("a build cut short (its pyro killed mid-mkfs) leaves nothing behind once the next build runs; a live builder's scratch stays", async () => {
    const dead = spawnSync("true").pid ?? 0;
    const deadScratch = join(cacheDir, `.build-${dead}-AbC123`);
    await mkdir(deadScratch, { mode: 0o700 });
    await writeFile(join(deadScratch, "image.ext4"), "half an image");
    const liveScratch = join(cacheDir, `.build-${process.ppid}-XyZ789`);
    await mkdir(liveScratch, { mode: 0o700 });
    // A size not built yet, so this give builds.
    await give("f", 3);
    const left = (await readdir(cacheDir)).filter((n) => n.startsWith(".build-"));
    assert.deepEqual(left, [`.build-${process.ppid}-XyZ789`]);
    await rm(liveScratch, { recursive: true });
  });
});
