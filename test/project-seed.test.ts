import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chown, mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { checkRepoRef, parseLsFilesZ, parseRepoUrl, unsafeRelativePath } from "../src/workspaces/git-input.js";
import { detectProjectSource, findCheckout, resolveProjectSeed } from "../src/workspaces/project-seed.js";
import { scanSeed, seedEntries } from "../src/workspaces/seed-image.js";
import { listDirectoryTree } from "../src/workspaces/seed-files.js";
import { testPaths } from "./helpers/vm-fixtures.js";
import { git } from "./helpers/git-fixture.js";

/** A checkout: tracked files, an untracked note, ignored output, a deleted tracked file, a FIFO. */
async function makeCheckout(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "pyro-project-"));
  await mkdir(join(dir, "src"));
  await writeFile(join(dir, ".gitignore"), "build/\n*.log\n");
  await writeFile(join(dir, "src", "app.py"), "print('hi')\n");
  await writeFile(join(dir, "gone.txt"), "deleted after commit\n");
  git(dir, "init", "-q");
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", "one");
  await unlink(join(dir, "gone.txt"));
  await writeFile(join(dir, "NOTES.md"), "untracked\n");
  await mkdir(join(dir, "build"));
  await writeFile(join(dir, "build", "out.bin"), "ignored\n");
  await writeFile(join(dir, "debug.log"), "ignored\n");
  await symlink("/etc/passwd", join(dir, "link-out"));
  assert.equal(spawnSync("mkfifo", [join(dir, "pipe")]).status, 0);
  return dir;
}

describe("project-aware seeds", () => {
  let checkout: string;
  before(async () => {
    checkout = await makeCheckout();
  });
  after(async () => {
    await rm(checkout, { recursive: true, force: true });
  });

  it("seeds tracked and untracked files, leaves ignored ones out, and lists what it skipped", async () => {
    const set = await resolveProjectSeed(testPaths, { kind: "project_path", path: join(checkout, "src") });
    assert.equal(set.root, checkout, "the checkout holding the path is the project");
    assert.deepEqual(set.origin, { kind: "project_path", ref: checkout, commit: git(checkout, "rev-parse", "HEAD") });
    // git lists no FIFO (a seed_path directory's walk does: see below).
    assert.deepEqual([...set.paths].sort(), [".gitignore", "NOTES.md", "gone.txt", "link-out", "src/app.py"]);
    // The seed image is built from this scan (seed-image.ts): what it takes, and what it skips and why.
    const scan = scanSeed({ root: set.root, paths: set.paths });
    const entries = new Map([...seedEntries(scan)].map((e) => [e.path, e]));
    assert.deepEqual([...entries.keys()].sort(), [".gitignore", "NOTES.md", "link-out", "src", "src/app.py"]);
    assert.equal(entries.get("src/app.py")!.size, "print('hi')\n".length);
    // A symlink is copied as a link (it resolves inside the guest), never followed on the host.
    assert.equal(entries.get("link-out")!.type, "l");
    assert.equal(entries.get("link-out")!.target, "/etc/passwd");
    assert.deepEqual(scan.skipped, [{ path: "gone.txt", reason: "vanished before it could be read" }]);
    assert.equal(scan.files, 3);
  });

  it("a directory seed skips special files and paths through symlinks, listing why", async () => {
    await mkdir(join(checkout, "linked"));
    await symlink("/etc", join(checkout, "linked", "etc"));
    const { paths, skipped } = await listDirectoryTree(checkout);
    assert.deepEqual(skipped, []);
    assert.ok(paths.includes("pipe") && paths.includes("build/out.bin") && paths.includes("linked/etc"));
    assert.ok(!paths.some((p) => p.startsWith("linked/etc/")), "a symlinked directory is a link, never walked into");
    const scan = scanSeed({ root: checkout, paths: [...paths, "link-out/x", "src/../../etc/passwd"].filter((p) => !p.startsWith(".git")) });
    const entries = new Map([...seedEntries(scan)].map((e) => [e.path, e]));
    assert.ok(entries.has("build/out.bin") && !entries.has("pipe"));
    assert.equal(entries.get("linked/etc")?.target, "/etc");
    await rm(join(checkout, "linked"), { recursive: true });
    assert.deepEqual(scan.skipped.map((s) => [s.path, s.reason]).sort(), [
      ["link-out/x", "'link-out' is not a directory"],
      ["pipe", "FIFO"],
      ["src/../../etc/passwd", "path component '..' is not allowed"],
    ]);
  });

  it("never runs the checkout's fsmonitor command, and ignores GIT_DIR from the caller", async () => {
    const canary = join(checkout, "..", `fsmonitor-ran-${process.pid}`);
    git(checkout, "config", "core.fsmonitor", `touch ${canary}; false`);
    const other = await mkdtemp(join(tmpdir(), "pyro-other-"));
    git(other, "init", "-q");
    process.env.GIT_DIR = join(other, ".git");
    try {
      const set = await resolveProjectSeed(testPaths, { kind: "project_path", path: checkout });
      assert.ok(set.paths.includes("src/app.py"), "listed the project's own files, not GIT_DIR's");
      await assert.rejects(readFile(canary), { code: "ENOENT" }, "core.fsmonitor ran");
    } finally {
      delete process.env.GIT_DIR;
      git(checkout, "config", "--unset", "core.fsmonitor");
      await rm(other, { recursive: true, force: true });
      await rm(canary, { force: true });
    }
  });

  it("has no project outside a checkout; --project-path to a plain directory seeds all of it", async () => {
    const plain = await mkdtemp(join(tmpdir(), "pyro-plain-"));
    try {
      assert.equal(await findCheckout(plain), undefined);
      assert.equal(await detectProjectSource({ cwd: plain }), undefined);
      assert.deepEqual(await detectProjectSource({ cwd: plain, projectPath: "." }), { kind: "project_path", path: plain });
      assert.deepEqual(await detectProjectSource({ cwd: join(checkout, "src") }), { kind: "project_path", path: checkout });
      // A dotfiles checkout at the home directory is not taken as the project (its untracked files are everything).
      const home = process.env.HOME;
      process.env.HOME = checkout;
      try {
        assert.equal(await detectProjectSource({ cwd: join(checkout, "src") }), undefined);
        assert.deepEqual(await detectProjectSource({ cwd: checkout, projectPath: "." }), { kind: "project_path", path: checkout }, "unless named explicitly");
      } finally {
        process.env.HOME = home;
      }
      await mkdir(join(plain, "d"));
      await writeFile(join(plain, "d", "f.txt"), "x");
      const set = await resolveProjectSeed(testPaths, { kind: "project_path", path: plain });
      assert.deepEqual(set.paths, ["d", "d/f.txt"]);
      assert.deepEqual(set.skipped, []);
      assert.equal(set.origin.commit, null);
    } finally {
      await rm(plain, { recursive: true, force: true });
    }
  });

  it("refuses flags that cannot work before serving", async () => {
    await assert.rejects(detectProjectSource({ cwd: checkout, repoRef: "main" }), /--repo-ref needs --repo-url/);
    await assert.rejects(detectProjectSource({ cwd: checkout, repoUrl: checkout, projectPath: "." }), /not both/);
    await assert.rejects(detectProjectSource({ cwd: checkout, projectPath: "nope" }), /is not a directory/);
    await assert.rejects(
      detectProjectSource({ cwd: checkout, repoUrl: "ext::sh -c id" }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /not a Git repository URL/.test(e.message),
    );
  });

  it("refuses a checkout owned by another user", { skip: process.getuid?.() !== 0 && "needs root to chown" }, async () => {
    const foreign = await mkdtemp(join(tmpdir(), "pyro-foreign-"));
    try {
      git(foreign, "init", "-q");
      await chown(foreign, 65534, 65534);
      await assert.rejects(findCheckout(foreign), (e) => isPyroError(e, "UNSAFE_DIRECTORY") && /belongs to another user/.test(e.message));
      assert.equal(await detectProjectSource({ cwd: foreign }), undefined, "a server started there runs without a project");
      await assert.rejects(resolveProjectSeed(testPaths, { kind: "project_path", path: foreign }), (e) => isPyroError(e, "UNSAFE_DIRECTORY"));
    } finally {
      await rm(foreign, { recursive: true, force: true });
    }
  });

  it("clones --repo-url (local path or file://) at --repo-ref: a branch, a tag or a commit; refuses what is not a repository", async () => {
    const first = git(checkout, "rev-parse", "HEAD");
    git(checkout, "tag", "v1");
    await writeFile(join(checkout, "second.txt"), "two\n");
    git(checkout, "add", "second.txt");
    git(checkout, "commit", "-q", "-m", "two");
    const latest = await resolveProjectSeed(testPaths, { kind: "repo_url", url: `file://${checkout}` });
    assert.equal(latest.origin.kind, "repo_url");
    assert.equal(latest.origin.ref, `file://${checkout}`);
    assert.ok(latest.paths.includes("second.txt"));
    assert.ok(!latest.paths.includes("NOTES.md"), "a clean clone: the checkout's untracked files are not in it");
    assert.ok(latest.root.startsWith(join(testPaths.cacheDir, "repos")));
    const tagged = await resolveProjectSeed(testPaths, { kind: "repo_url", url: checkout, ref: "v1" });
    assert.equal(tagged.origin.commit, first);
    assert.ok(!tagged.paths.includes("second.txt"));
    const byCommit = await resolveProjectSeed(testPaths, { kind: "repo_url", url: checkout, ref: first });
    assert.equal(byCommit.origin.commit, first);
    const plain = await mkdtemp(join(tmpdir(), "pyro-notrepo-"));
    try {
      await assert.rejects(
        resolveProjectSeed(testPaths, { kind: "repo_url", url: plain }),
        (e) => isPyroError(e, "INVALID_ARGUMENT") && /cannot clone --repo-url/.test(e.message),
      );
      await assert.rejects(
        resolveProjectSeed(testPaths, { kind: "repo_url", url: checkout, ref: "no-such-branch" }),
        /cannot clone --repo-url .* at --repo-ref no-such-branch/,
      );
    } finally {
      await rm(plain, { recursive: true, force: true });
    }
  });
});

describe("project seed input parsing (properties)", () => {
  const root = "/seed-root";
  it("parseLsFilesZ: whatever bytes git prints, every path it returns stays inside the root", () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc
        .array(fc.constantFrom("a", "b", "/", ".", "..", ".git", "\0", "é", "\n", "GIT"), { maxLength: 40 })
        .map((parts) => new TextEncoder().encode(parts.join(""))),
    );
    fc.assert(
      fc.property(bytes, (raw) => {
        const { paths, skipped } = parseLsFilesZ(Buffer.from(raw));
        for (const path of paths) {
          assert.equal(unsafeRelativePath(path), undefined);
          assert.ok(resolve(root, path).startsWith(`${root}/`), path);
          assert.ok(!path.split("/").some((p) => p.toLowerCase() === ".git"));
        }
        assert.equal(new Set(paths).size, paths.length);
        for (const s of skipped) assert.ok(!s.path.includes("\0"));
      }),
      { numRuns: 300 },
    );
  });

  it("parseLsFilesZ: sane names come back as they went in", () => {
    const name = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_. -]{0,11}$/).filter((n) => n.toLowerCase() !== ".git");
    const path = fc.array(name, { minLength: 1, maxLength: 4 }).map((parts) => parts.join("/"));
    fc.assert(
      fc.property(fc.uniqueArray(path, { maxLength: 20 }), (paths) => {
        const parsed = parseLsFilesZ(Buffer.from(paths.map((p) => `${p}\0`).join("")));
        assert.deepEqual(parsed.paths, paths);
        assert.deepEqual(parsed.skipped, []);
      }),
      { numRuns: 200 },
    );
  });

  it("parseRepoUrl: accepts nothing git could read as an option or a remote helper", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 60 }),
          fc.constantFrom("ext::sh -c id", "fd::3", "-uhttps://x/y", "--upload-pack=id", "https://h/r", "git@h:r.git", "file:///r", "./r", "ftp://h/r"),
        ),
        (url) => {
          try {
            const parsed = parseRepoUrl(url, "/cwd");
            assert.ok(!url.startsWith("-") && !url.includes("::") && !/\s/.test(url), url);
            if (parsed.kind === "local") assert.ok(parsed.path.startsWith("/"));
            else assert.ok(/^(https?|ssh|git|file):\/\//i.test(url) || /^[^/]*:/.test(url), url);
          } catch (error) {
            assert.ok(isPyroError(error, "INVALID_ARGUMENT"), String(error));
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it("checkRepoRef: every ref it accepts is one git accepts too", () => {
    const ref = fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.array(fc.constantFrom("main", "v1", "/", ".", "..", "-", "@{", "lock", "~", " ", "a"), { maxLength: 6 }).map((p) => p.join("")),
    );
    fc.assert(
      fc.property(ref, (candidate) => {
        let accepted = true;
        try {
          checkRepoRef(candidate);
        } catch (error) {
          assert.ok(isPyroError(error, "INVALID_ARGUMENT"));
          accepted = false;
        }
        if (accepted) {
          const r = spawnSync("git", ["check-ref-format", "--allow-onelevel", candidate]);
          assert.equal(r.status, 0, `pyro accepted '${candidate}' but git refuses it`);
        }
      }),
      { numRuns: 150 },
    );
  });
});
