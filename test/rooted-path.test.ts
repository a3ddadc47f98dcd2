import assert from "node:assert/strict";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { applyLayer } from "../src/environments/image-layer.js";
import { MAX_SYMLINK_FOLLOWS, RootedTree } from "../src/storage/rooted-path.js";
import { makeTar, type RawTarEntry } from "./helpers/tar-builder.js";
import { snapshotTree } from "./helpers/tree-snapshot.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

/** A host tree an import must never touch: files, a mode, nested dirs, a link and a dangling link. */
async function plantCanary(canary: string): Promise<void> {
  await mkdir(join(canary, "d", "e"), { recursive: true });
  await writeFile(join(canary, "f"), "canary f\n", { mode: 0o640 });
  await writeFile(join(canary, "d", "g"), "canary g\n");
  await writeFile(join(canary, "d", "e", "h"), "canary h\n");
  await symlink("f", join(canary, "l"));
  await symlink("/nonexistent", join(canary, "dangling"));
}

/** A sandbox holding the tree's root and, next to it, a host canary the tree must never touch. */
async function sandbox(): Promise<{ dir: string; root: string; canary: string; tree: RootedTree; intact: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "pyro-rooted-"));
  const root = join(dir, "root");
  const canary = join(dir, "canary");
  await mkdir(root);
  await plantCanary(canary);
  const before = await snapshotTree(canary);
  const intact = async () => assert.deepEqual(await snapshotTree(canary), before, "the canary next to the root changed");
  return { dir, root, canary, tree: new RootedTree(root), intact };
}

describe("RootedTree: paths resolved inside a root", () => {
  let s: Awaited<ReturnType<typeof sandbox>>;
  beforeEach(async () => {
    if (s) await rm(s.dir, { recursive: true, force: true });
    s = await sandbox();
  });
  afterEach(async () => {
    await s.intact();
  });
  after(async () => {
    await rm(s.dir, { recursive: true, force: true });
  });

  it("clamps '..' at the root and re-roots absolute symlink targets", async () => {
    await mkdir(join(s.root, "etc"));
    await symlink("../../../..", join(s.root, "up"));
    await symlink("/etc", join(s.root, "abs"));
    await symlink(s.canary, join(s.root, "host"));
    assert.equal((await s.tree.resolve("../../canary", { followFinal: true })).hostPath, join(s.root, "canary"));
    assert.equal((await s.tree.resolve("up/canary/f", { followFinal: true })).hostPath, join(s.root, "canary", "f"));
    assert.equal((await s.tree.resolve("abs", { followFinal: true })).hostPath, join(s.root, "etc"));
    assert.equal((await s.tree.resolve("/abs/../abs/passwd", { followFinal: true })).hostPath, join(s.root, "etc", "passwd"));
    const host = await s.tree.resolve("host/f", { followFinal: true });
    assert.equal(host.hostPath, join(s.root, s.canary, "f"));
    assert.equal(host.stats, undefined);
    // Not followed: the link itself.
    assert.equal((await s.tree.resolve("up", { followFinal: false })).hostPath, join(s.root, "up"));
  });

  it("follows the z0..z15 chain inside the root, where every link is the root itself", async () => {
    await mkdir(join(s.root, "x"));
    await symlink("..", join(s.root, "x", "z0"));
    for (let i = 1; i <= 15; i++) await symlink(`z${i - 1}/..`, join(s.root, "x", `z${i}`));
    const through = await s.tree.resolve(`x/z15${s.canary}/f`, { followFinal: true });
    assert.equal(through.hostPath, join(s.root, s.canary, "f"));
    assert.equal(through.stats, undefined);
    assert.equal(await s.tree.remove(`x/z15${s.canary}/f`), false);
    await s.tree.emptyDirectory(`x/z15${s.canary}/d`);
    await s.intact();
  });

  it("names a symlink loop clearly instead of hanging", async () => {
    await symlink("b", join(s.root, "a"));
    await symlink("a", join(s.root, "b"));
    await assert.rejects(
      s.tree.resolve("a/x", { followFinal: false }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && new RegExp(`more than ${MAX_SYMLINK_FOLLOWS} symlinks`).test(e.message),
    );
    await assert.rejects(s.tree.makeDirectory("a/x"), (e) => isPyroError(e, "INVALID_ARGUMENT") && /loop/.test(e.message));
    // Long targets followed many times: bounded work, not a stall.
    await symlink(`${"../".repeat(1300)}z`, join(s.root, "z"));
    await assert.rejects(s.tree.resolve("z/z", { followFinal: true }), (e) => isPyroError(e, "INVALID_ARGUMENT") && /steps/.test(e.message));
  });

  it("removes a symlink, never its target, and empties only real directories inside the root", async () => {
    await symlink(s.canary, join(s.root, "to-canary"));
    await symlink("/canary-dir-in-root", join(s.root, "to-inner"));
    await mkdir(join(s.root, "canary-dir-in-root"));
    await writeFile(join(s.root, "canary-dir-in-root", "x"), "x");
    await symlink(join(s.canary, "d"), join(s.root, "canary-dir-in-root", "escape"));
    await s.tree.emptyDirectory("to-canary");
    assert.equal(await s.tree.remove("to-canary"), true);
    await assert.rejects(lstat(join(s.root, "to-canary")));
    // A link to a directory inside the root empties that directory, removing (not following) the links in it.
    await s.tree.emptyDirectory("to-inner");
    assert.deepEqual(await readdir(join(s.root, "canary-dir-in-root")), []);
    await assert.rejects(s.tree.remove(".."), (e) => isPyroError(e, "INVALID_ARGUMENT") && /root/.test(e.message));
    await assert.rejects(s.tree.remove(""), (e) => isPyroError(e, "INVALID_ARGUMENT"));
  });

  it("replaces a symlink with a new file instead of writing through it, and hardlinks only inside the root", async () => {
    await symlink(join(s.canary, "f"), join(s.root, "f"));
    await s.tree.writeFile("f", "new\n");
    assert.equal(await readFile(join(s.canary, "f"), "utf8"), "canary f\n");
    assert.equal(await readFile(join(s.root, "f"), "utf8"), "new\n");
    await symlink(s.canary, join(s.root, "c"));
    // The target resolves inside the root: <root>/<canary>/f does not exist, so nothing is linked.
    await assert.rejects(s.tree.hardlink("h", `c/f`), (e) => isPyroError(e, "INVALID_ARGUMENT") && /does not exist/.test(e.message));
    await assert.rejects(s.tree.hardlink("h", `../canary/f`), (e) => isPyroError(e, "INVALID_ARGUMENT") && /does not exist/.test(e.message));
    // A hardlink to a symlink links the symlink itself.
    await s.tree.hardlink("c2", "c");
    assert.equal(await readlink(join(s.root, "c2")), s.canary);
    assert.equal((await lstat(join(s.canary, "f"))).nlink, 1);
  });

  it("refuses to create below a non-directory, and finds nothing below one", async () => {
    await writeFile(join(s.root, "file"), "x");
    await assert.rejects(s.tree.makeDirectory("file/sub"), (e) => isPyroError(e, "INVALID_ARGUMENT") && /'file' is not a directory/.test(e.message));
    assert.equal(await s.tree.lstat("file/sub"), undefined);
    assert.equal(await s.tree.remove("file/sub"), false);
  });
});

// ---- property: random layers never reach outside the root ----

const NAMES = ["a", "b", "c"] as const;
const name = fc.constantFrom(...NAMES);
const component = fc.oneof({ weight: 5, arbitrary: name }, { weight: 1, arbitrary: fc.constantFrom("..", ".") });
const relPath = fc.array(component, { minLength: 1, maxLength: 4 }).map((p) => p.join("/"));

/** Symlink targets: relative, absolute, `..`-heavy, and aimed straight at the canary (filled in per run). */
const linkTarget = fc.oneof(
  relPath,
  relPath.map((p) => `/${p}`),
  fc.integer({ min: 1, max: 6 }).map((n) => "../".repeat(n)),
  fc.tuple(fc.integer({ min: 1, max: 6 }), fc.constantFrom("canary", "canary/f", "canary/d", "canary/l")).map(([n, t]) => "../".repeat(n) + t),
  fc.constantFrom("@CANARY", "@CANARY/f", "@CANARY/d", "@CANARY/d/e", "/", "..", "."),
);

type Op =
  | { kind: "file"; path: string; content: string; mode: number }
  | { kind: "dir"; path: string; mode: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "hardlink"; path: string; target: string }
  | { kind: "whiteout"; dir: string; name: string }
  | { kind: "opaque"; dir: string };

const dirPath = fc.option(relPath, { nil: "" });
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("file" as const), path: relPath, content: fc.string({ maxLength: 8 }), mode: fc.constantFrom(0o644, 0o755, 0o600, 0o4755) }),
  fc.record({ kind: fc.constant("dir" as const), path: relPath, mode: fc.constantFrom(0o755, 0o700, 0o555, 0o1777) }),
  fc.record({ kind: fc.constant("symlink" as const), path: relPath, target: linkTarget }),
  fc.record({ kind: fc.constant("hardlink" as const), path: relPath, target: fc.oneof(relPath, linkTarget) }),
  fc.record({ kind: fc.constant("whiteout" as const), dir: dirPath, name: fc.oneof(name, fc.constantFrom("f", "d", "l", "canary")) }),
  fc.record({ kind: fc.constant("opaque" as const), dir: dirPath }),
);

function toEntries(ops: Op[], canary: string): RawTarEntry[] {
  const fill = (t: string) => t.replace("@CANARY", canary);
  const under = (dir: string, n: string) => (dir ? `${dir}/${n}` : n);
  // biome-ignore lint/suspicious/useIterableCallbackReturn: the switch covers every kind, each case returns
  return ops.map((o): RawTarEntry => {
    switch (o.kind) {
      case "file":
        return { path: o.path, content: o.content, mode: o.mode };
      case "dir":
        return { path: `${o.path}/`, type: "dir", mode: o.mode };
      case "symlink":
        return { path: o.path, type: "symlink", linkpath: fill(o.target) };
      case "hardlink":
        return { path: o.path, type: "hardlink", linkpath: fill(o.target) };
      case "whiteout":
        return { path: under(o.dir, `.wh.${o.name}`) };
      case "opaque":
        return { path: under(o.dir, ".wh..wh..opq") };
    }
  });
}

describe("RootedTree: random layers (property)", () => {
  const base = suiteTempDir("pyro-rooted-prop-");

  it("applies random layers of files, dirs, chained/absolute/'..' symlinks, hardlinks, whiteouts and opaque markers without touching a canary next to the root", {
    timeout: 120_000,
  }, async () => {
    // Absolute targets like `/a` must land in the root: these must never appear on the host.
    const hostProbes = NAMES.map((n) => `/${n}`);
    for (const p of hostProbes) await assert.rejects(lstat(p), `${p} exists on this host; the probe needs it absent`);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 3 }), async (layers) => {
        const dir = join(base(), String(run++));
        await mkdir(dir);
        try {
          const root = join(dir, "root");
          const canary = join(dir, "canary");
          await mkdir(root);
          await plantCanary(canary);
          const before = await snapshotTree(canary);
          const tree = new RootedTree(root);
          for (const [i, ops] of layers.entries()) {
            const layerPath = join(dir, `layer${i}.tar`);
            await writeFile(layerPath, makeTar(toEntries(ops, canary)));
            try {
              await applyLayer(tree, { path: layerPath, compression: "none" }, `layer ${i}`);
            } catch (error) {
              // A refusal is fine (a loop, a file where a directory must be…); only a PyroError is.
              assert.ok(isPyroError(error), `layer ${i} failed with ${String(error)}`);
              break;
            }
          }
          assert.deepEqual(await snapshotTree(canary), before, "the canary changed");
          assert.deepEqual((await readdir(dir)).filter((n) => !/^layer\d\.tar$/.test(n)).sort(), ["canary", "root"], "something was created next to the root");
          for (const p of hostProbes) await assert.rejects(lstat(p), `${p} was created on the host`);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 100 },
    );
  });
});
