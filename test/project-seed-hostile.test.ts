/**
 * An attacker's pass over project seeds: a hostile checkout (its own .git/config, racing renames
 * under the root, absurd listings) must not make pyro read or name host files outside the
 * checkout, and must not exhaust it.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import type { PyroPaths } from "../src/paths.js";
import { resolveProjectSeed } from "../src/workspaces/project-seed.js";
import { MAX_SEED_ENTRIES } from "../src/workspaces/seed-files.js";
import { scanSeed, stageSeed } from "../src/workspaces/seed-image.js";
import { git } from "./helpers/git-fixture.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

describe("hostile project seeds", () => {
  const base = suiteTempDir("pyro-seed-hostile-");

  it("a checkout's core.worktree cannot make pyro list (or name) files outside the checkout", async () => {
    const outside = join(base(), "home-ssh");
    await mkdir(outside);
    await writeFile(join(outside, "id_ed25519-private-name"), "KEY\n");
    const checkout = join(base(), "worktree-redirect");
    await mkdir(checkout);
    await writeFile(join(checkout, "README"), "hi\n");
    git(checkout, "init", "-q");
    git(checkout, "add", "README");
    git(checkout, "commit", "-q", "-m", "one");
    git(checkout, "config", "core.worktree", outside);
    const set = await resolveProjectSeed(
      { cacheDir: join(base(), "cache"), stateDir: join(base(), "state"), runtimeDir: join(base(), "run") },
      { kind: "project_path", path: checkout },
    );
    assert.deepEqual(set.paths, ["README"], "only the checkout's own files are listed");
    const scan = scanSeed({ root: set.root, paths: set.paths });
    assert.ok(!JSON.stringify([set.skipped, scan.skipped]).includes("id_ed25519"), `a host file name leaked into the result: ${JSON.stringify(scan.skipped)}`);
  });

  it("never copies a file through a parent directory swapped for a symlink while staging the seed (TOCTOU)", async () => {
    const root = join(base(), "race-root");
    const secretDir = join(base(), "race-outside");
    await mkdir(join(root, "dir"), { recursive: true });
    await mkdir(secretDir);
    await writeFile(join(root, "dir", "file"), "inside\n");
    await writeFile(join(root, "keep"), "k\n");
    await writeFile(join(secretDir, "file"), "HOST-SECRET\n");
    await symlink(secretDir, join(root, "link"));
    const source = { root, paths: ["dir/file", "keep"] };
    const scan = scanSeed(source); // taken while nothing races: the staging below is what is attacked
    // Another process flips root/dir between the real directory and a link out of the root.
    const flip = `const fs=require("fs");const r=${JSON.stringify(root)};for(;;){try{fs.renameSync(r+"/dir",r+"/real");fs.renameSync(r+"/link",r+"/dir");fs.renameSync(r+"/dir",r+"/link");fs.renameSync(r+"/real",r+"/dir");}catch{}}`;
    const flipper = spawn(process.execPath, ["-e", flip], { stdio: "ignore" });
    let leaked = 0;
    let copiedInside = 0;
    let refused = 0;
    try {
      for (let i = 0; i < 300; i++) {
        const staging = join(base(), `stage-${i}`);
        await mkdir(staging);
        try {
          await stageSeed(source, scan, staging);
          const text = await readFile(join(staging, "dir", "file"), "utf8");
          if (text.includes("HOST-SECRET")) leaked++;
          if (text.includes("inside")) copiedInside++;
        } catch (error) {
          assert.ok(isPyroError(error, "INVALID_ARGUMENT") && /changed while it was copied/.test(error.message), String(error));
          refused++;
        }
        await rm(staging, { recursive: true, force: true });
      }
    } finally {
      flipper.kill("SIGKILL");
    }
    assert.equal(leaked, 0, `a host file outside the root was staged ${leaked} times out of 300 (${refused} refused)`);
    assert.ok(copiedInside > 0, "the file inside the root is still copied when the race is lost by the attacker");
  });

  it("refuses a file set with more entries than a seed may hold before touching the disk", async () => {
    const root = join(base(), "many");
    await mkdir(root);
    await writeFile(join(root, "real"), "x\n");
    const paths = Array.from({ length: MAX_SEED_ENTRIES + 1 }, (_, i) => `f${i}`);
    paths.push("real");
    const started = Date.now();
    assert.throws(
      () => scanSeed({ root, paths }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && new RegExp(`more than ${MAX_SEED_ENTRIES} entries`).test(e.message),
    );
    assert.ok(Date.now() - started < 60_000, "refused up front, not after millions of lstat calls");
  });

  it("never clones through a repos cache directory that is a symlink", async () => {
    const source = join(base(), "clone-source");
    await mkdir(source);
    await writeFile(join(source, "a"), "a\n");
    git(source, "init", "-q");
    git(source, "add", "a");
    git(source, "commit", "-q", "-m", "one");
    const cacheDir = join(base(), "cache-planted");
    const elsewhere = join(base(), "planted-target");
    await mkdir(cacheDir, { mode: 0o700 });
    await mkdir(elsewhere);
    await symlink(elsewhere, join(cacheDir, "repos"));
    const paths: PyroPaths = { cacheDir, stateDir: join(base(), "state2"), runtimeDir: join(base(), "run2") };
    await assert.rejects(resolveProjectSeed(paths, { kind: "repo_url", url: source }), (e) => isPyroError(e, "UNSAFE_DIRECTORY"));
    assert.deepEqual(spawnSync("ls", ["-A", elsewhere], { encoding: "utf8" }).stdout, "", "nothing was written through the link");
  });

  it("a checkout with nothing to pack (fresh git init, or every file skipped) is an empty seed, not a failed create", async () => {
    const fresh = join(base(), "fresh-init");
    await mkdir(fresh);
    git(fresh, "init", "-q");
    const set = await resolveProjectSeed(
      { cacheDir: join(base(), "cache"), stateDir: join(base(), "state"), runtimeDir: join(base(), "run") },
      { kind: "project_path", path: fresh },
    );
    assert.deepEqual(set.paths, []);
    const scan = scanSeed({ root: set.root, paths: set.paths });
    assert.deepEqual([scan.files, scan.manifest.count], [0, 0]);
    const allSkipped = scanSeed({ root: fresh, paths: ["deleted-after-listing"] });
    assert.deepEqual(allSkipped.skipped, [{ path: "deleted-after-listing", reason: "vanished before it could be read" }]);
  });
});
