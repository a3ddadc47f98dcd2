import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { copyOverlayOnto, createEmptyOverlay } from "../src/storage/qcow2-overlay.js";

function qemu(tool: string, args: string[]): string {
  const r = spawnSync(tool, args, { encoding: "utf8" });
  assert.equal(r.status, 0, `${tool} ${args.join(" ")}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

interface ImageInfo {
  "virtual-size": number;
  format: string;
  "cluster-size": number;
  "backing-filename"?: string;
  "backing-filename-format"?: string;
  "format-specific"?: { data: { compat: string; "refcount-bits": number; corrupt: boolean; "lazy-refcounts": boolean } };
}

const info = (path: string) => JSON.parse(qemu("qemu-img", ["info", "--output=json", path])) as ImageInfo;

/** What qemu-img itself reports for an image: the fields an overlay's readers depend on. */
function essentials(i: ImageInfo) {
  return {
    virtualSize: i["virtual-size"],
    format: i.format,
    cluster: i["cluster-size"],
    backing: i["backing-filename"],
    backingFormat: i["backing-filename-format"],
    specific: i["format-specific"]?.data,
  };
}

describe("empty qcow2 overlays written in-process", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pyro-overlay-"));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it("is the image qemu-img create makes: same info, passes qemu-img check, reads through and takes writes", async () => {
    const base = join(dir, "base.raw");
    await writeFile(base, Buffer.alloc(3 * 1024 * 1024, 0x5a));
    await truncate(base, 4 * 2 ** 30 + 1000); // not a whole number of sectors: qemu rounds up
    const mine = join(dir, "mine.qcow2");
    const theirs = join(dir, "theirs.qcow2");
    await createEmptyOverlay(mine, base, "raw");
    qemu("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", theirs]);
    assert.deepEqual(essentials(info(mine)), essentials(info(theirs)));
    qemu("qemu-img", ["check", mine]);
    assert.equal((await stat(mine)).mode & 0o777, 0o600);
    // A second layer on a qcow2 backing, as a workspace's live disk on a snapshot.
    const top = join(dir, "top.qcow2");
    await createEmptyOverlay(top, mine, "qcow2");
    assert.deepEqual(essentials(info(top)), { ...essentials(info(theirs)), backing: mine, backingFormat: "qcow2" });
    qemu("qemu-io", ["-c", "read -P 0x5a 0 3M", "-c", "read -P 0 3M 1M", top]);
    qemu("qemu-io", ["-c", "write -P 0xab 1M 128k", top]);
    qemu("qemu-img", ["check", top]);
    qemu("qemu-io", ["-c", "read -P 0xab 1M 128k", "-c", "read -P 0x5a 0 1M", top]);
    qemu("qemu-io", ["-c", "read -P 0x5a 1M 128k", mine]); // the write stayed in the top layer
  });

  it("refuses an existing path, and a backing that is not there or not qcow2", async () => {
    const base = join(dir, "small.raw");
    await writeFile(base, Buffer.alloc(65536));
    const path = join(dir, "exists.qcow2");
    await createEmptyOverlay(path, base, "raw");
    await assert.rejects(createEmptyOverlay(path, base, "raw"), { code: "EEXIST" });
    await assert.rejects(createEmptyOverlay(join(dir, "b.qcow2"), join(dir, "missing.raw"), "raw"), { code: "ENOENT" });
    await assert.rejects(createEmptyOverlay(join(dir, "c.qcow2"), base, "qcow2"), (e) => isPyroError(e, "HOST_COMMAND_FAILED"));
  });

  it("matches qemu-img for any size and backing name (property)", async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 41 }), fc.stringMatching(/^[A-Za-z0-9 ._,:=-]{1,60}$/), async (bytes, name) => {
        const base = join(dir, `b${n} ${name}`);
        await writeFile(base, "");
        await truncate(base, bytes);
        const mine = join(dir, `m${n}.qcow2`);
        const theirs = join(dir, `t${n++}.qcow2`);
        await createEmptyOverlay(mine, base, "raw");
        qemu("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", theirs]);
        assert.deepEqual(essentials(info(mine)), essentials(info(theirs)));
        qemu("qemu-img", ["check", mine]);
        await rm(base);
      }),
      { numRuns: 12 },
    );
  });

  it("copies an overlay QEMU wrote onto another backing file: its writes kept, the rest read from the new backing", async () => {
    const first = join(dir, "first.raw");
    const second = join(dir, `second-${"x".repeat(200)}.raw`); // a longer name than the one it replaces
    for (const base of [first, second]) await writeFile(base, Buffer.alloc(4 * 1024 * 1024, 0x5a));
    const written = join(dir, "written.qcow2");
    await createEmptyOverlay(written, first, "raw");
    qemu("qemu-io", ["-c", "write -P 0xab 1M 128k", "-c", "write -P 0xcd 3M 4k", written]);
    const copy = join(dir, "copy.qcow2");
    await copyOverlayOnto(written, copy, second);
    assert.deepEqual(essentials(info(copy)), { ...essentials(info(written)), backing: second });
    assert.equal((await stat(copy)).mode & 0o777, 0o600);
    qemu("qemu-img", ["check", copy]);
    await writeFile(first, Buffer.alloc(4 * 1024 * 1024, 0x11)); // the copy no longer reads the first backing
    qemu("qemu-io", ["-c", "read -P 0xab 1M 128k", "-c", "read -P 0xcd 3M 4k", "-c", "read -P 0x5a 0 1M", "-c", "read -P 0x5a 2M 1M", copy]);
    // Back onto a shorter name: nothing of the longer one is left in the header.
    const again = join(dir, "again.qcow2");
    await copyOverlayOnto(copy, again, first);
    assert.equal(info(again)["backing-filename"], first);
    qemu("qemu-img", ["check", again]);
    await assert.rejects(copyOverlayOnto(written, copy, second), { code: "EEXIST" });
    await assert.rejects(copyOverlayOnto(first, join(dir, "raw-copy.qcow2"), second), (e) => isPyroError(e, "HOST_COMMAND_FAILED"));
  });
});
