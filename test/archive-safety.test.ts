import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, mkdir, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { prepareTree, safeRelativePath, validateTar } from "../src/workspaces/archive-safety.js";
import { workspacePath } from "../src/workspaces/guest-paths.js";
import { makeTar, type RawTarEntry } from "./helpers/tar-builder.js";

const unsafe = (pattern: RegExp) => (e: unknown) => isPyroError(e, "UNSAFE_ARCHIVE") && pattern.test(e.message);

describe("archive safety (hostile archives)", () => {
  it("accepts an ordinary tree with files, directories, internal symlinks and hardlinks", async () => {
    const tar = makeTar([
      { path: "src/", type: "dir" },
      { path: "src/a.txt", content: "hello" },
      { path: "src/link", type: "symlink", linkpath: "a.txt" },
      { path: "src/hard", type: "hardlink", linkpath: "src/a.txt" },
    ]);
    assert.deepEqual(await validateTar(tar, true), { files: 2, directories: 1, symlinks: 1, bytes: 5 });
  });

  const hostile: [string, RawTarEntry[], RegExp][] = [
    ["absolute paths", [{ path: "/etc/passwd", content: "x" }], /absolute/],
    ["'..' traversal", [{ path: "a/../../etc/passwd", content: "x" }], /'\.\.'/],
    ["character devices", [{ path: "dev/mem", type: "char" }], /devices/],
    ["block devices", [{ path: "sda", type: "block" }], /devices/],
    ["FIFOs", [{ path: "pipe", type: "fifo" }], /FIFO/],
    ["absolute symlinks", [{ path: "etc", type: "symlink", linkpath: "/etc" }], /outside/],
    ["relative symlinks that escape", [{ path: "a/up", type: "symlink", linkpath: "../../.." }], /outside/],
    [
      "writes through a symlink",
      [
        { path: "inner", type: "symlink", linkpath: "sub" },
        { path: "inner/file", content: "x" },
      ],
      /through the symlink/,
    ],
    ["hardlinks to outside files", [{ path: "h", type: "hardlink", linkpath: "../../etc/shadow" }], /'\.\.'/],
    ["hardlinks to unknown files", [{ path: "h", type: "hardlink", linkpath: "nope" }], /not an earlier file/],
  ];
  for (const [what, entries, pattern] of hostile) {
    it(`rejects ${what}`, async () => {
      await assert.rejects(validateTar(makeTar(entries), true), unsafe(pattern));
    });
  }

  it("rejects garbage that is not a tar", async () => {
    await assert.rejects(validateTar(Buffer.from("definitely not a tar archive".repeat(40)), true), (e) => isPyroError(e, "UNSAFE_ARCHIVE"));
  });

  it("reads .tar.gz seeds and refuses unknown file kinds", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-archive-"));
    try {
      await writeFile(join(dir, "ok.tar.gz"), gzipSync(makeTar([{ path: "x.txt", content: "1" }])));
      assert.equal((await prepareTree(join(dir, "ok.tar.gz"))).summary.files, 1);
      await writeFile(join(dir, "evil.tgz"), gzipSync(makeTar([{ path: "../x", content: "1" }])));
      await assert.rejects(prepareTree(join(dir, "evil.tgz")), unsafe(/'\.\.'/));
      await writeFile(join(dir, "notes.zip"), "PK");
      await assert.rejects(prepareTree(join(dir, "notes.zip")), (e) => isPyroError(e, "INVALID_ARGUMENT"));
      await assert.rejects(prepareTree(join(dir, "missing")), (e) => isPyroError(e, "INVALID_ARGUMENT") && /does not exist/.test(e.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("packs a host directory with its symlinks as symlinks, never following them", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-archive-"));
    try {
      await mkdir(join(dir, "src"));
      await writeFile(join(dir, "src", "main.c"), "int main(){}");
      await symlink("/etc/passwd", join(dir, "passwd-link"));
      const tree = await prepareTree(dir);
      assert.equal(tree.mode, "directory");
      assert.equal(tree.summary.files, 1);
      assert.equal(tree.summary.symlinks, 1);
      assert.ok(!tree.tar.includes(Buffer.from("root:x:0:0")), "the symlink target's content was not packed");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("never lets a normalised archive path escape (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("a", "b", "..", ".", "", "/", "c.txt"), { maxLength: 8 }), (parts) => {
        const raw = parts.join("/");
        try {
          const safe = safeRelativePath(raw);
          assert.ok(!safe.startsWith("/"));
          assert.ok(!safe.split("/").includes(".."));
        } catch (error) {
          assert.ok(isPyroError(error, "UNSAFE_ARCHIVE"));
        }
      }),
    );
  });
});

describe("workspace path confinement", () => {
  it("maps relative and absolute paths under /workspace", () => {
    assert.equal(workspacePath("src/a.c"), "/workspace/src/a.c");
    assert.equal(workspacePath("/workspace/x/"), "/workspace/x");
    assert.equal(workspacePath("."), "/workspace");
    assert.equal(workspacePath("a/../b"), "/workspace/b");
  });

  it("refuses anything outside /workspace", () => {
    for (const bad of ["../etc/passwd", "/etc/passwd", "/workspace/../root", "/workspacex", "a/../../x", "x\0y"]) {
      assert.throws(
        () => workspacePath(bad),
        (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE"),
        bad,
      );
    }
  });

  it("never resolves outside /workspace (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("a", "..", ".", "", "workspace", "etc"), { maxLength: 8 }), fc.boolean(), (parts, absolute) => {
        const input = (absolute ? "/" : "") + parts.join("/");
        try {
          const p = workspacePath(input);
          assert.ok(p === "/workspace" || p.startsWith("/workspace/"), p);
        } catch (error) {
          assert.ok(isPyroError(error, "PATH_OUTSIDE_WORKSPACE"));
        }
      }),
    );
  });
});
