import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { lstat, mkdir, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { Header } from "tar";
import { isPyroError } from "../src/errors.js";
import { prepareWorkspaceSeed } from "../src/workspaces/workspace-seed.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

/** A tar of the given headers (no bodies: files of size 0), as a hostile archive would carry them. */
function rawTar(entries: { path: string; type: "File" | "Directory" | "SymbolicLink" | "Link"; linkpath?: string }[]): Buffer {
  const blocks = entries.map((e) => {
    const h = new Header({ path: e.path, type: e.type, mode: 0o644, size: 0, ...(e.linkpath ? { linkpath: e.linkpath } : {}) });
    h.encode();
    return h.block!;
  });
  return Buffer.concat([...blocks, Buffer.alloc(1024)]);
}

describe("archive seeds are streamed: checked, then unpacked, never held whole", () => {
  const dir = suiteTempDir("pyro-seed-archive-");

  const origin = { kind: "seed_path" as const, ref: "x", commit: null };

  it("unpacks a 256 MiB .tgz with pyro's memory growing by a fraction of it", async () => {
    const src = join(dir(), "src");
    await mkdir(src);
    await writeFile(join(src, "small.txt"), "hello\n");
    await writeFile(join(src, "big.bin"), "");
    await truncate(join(src, "big.bin"), 256 * 2 ** 20);
    const archive = join(dir(), "big.tgz");
    execFileSync("tar", ["-czf", archive, "-C", src, "."]);
    const before = process.memoryUsage().rss;
    let root = "";
    const seed = await prepareWorkspaceSeed({ kind: "archive", path: archive, origin }, async () => {
      root = join(dir(), "unpacked");
      await mkdir(root);
      return root;
    });
    const grown = (process.resourceUsage().maxRSS * 1024 - before) / 2 ** 20;
    assert.equal(seed.mode, "tar_archive");
    assert.equal((await lstat(join(root, "big.bin"))).size, 256 * 2 ** 20);
    assert.ok(grown < 100, `peak RSS grew by ${grown.toFixed(0)} MiB while unpacking 256 MiB`);
    await rm(root, { recursive: true, force: true });
  });

  it("refuses a hostile archive before writing anything (property over escapes, links and types)", async () => {
    const name = fc.constantFrom("a", "b", "a/b", "../x", "/etc/passwd", "a/../../x", "ok/file");
    const entryArb = fc.record({
      path: name,
      type: fc.constantFrom("File", "Directory", "SymbolicLink", "Link") as fc.Arbitrary<"File" | "Directory" | "SymbolicLink" | "Link">,
      linkpath: fc.constantFrom("../../etc", "/etc", "a", "ok/file", "b"),
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(entryArb, { minLength: 1, maxLength: 5 }), async (entries) => {
        const archive = join(dir(), `h${run++}.tar`);
        await writeFile(archive, rawTar(entries));
        let unpacked: string | undefined;
        try {
          await prepareWorkspaceSeed({ kind: "archive", path: archive, origin }, async () => {
            unpacked = join(dir(), `u${run}`);
            await mkdir(unpacked);
            return unpacked;
          });
        } catch (error) {
          assert.ok(isPyroError(error, "UNSAFE_ARCHIVE"), String(error));
          assert.equal(unpacked, undefined, "nothing is unpacked from an archive that fails its check");
          return;
        }
        // Accepted: everything it made stays below its root.
        assert.ok(unpacked);
        for (const e of await readdir(unpacked, { recursive: true })) assert.ok(!e.startsWith(".."), e);
        await rm(unpacked, { recursive: true, force: true });
      }),
      { numRuns: 60 },
    );
  });
});
