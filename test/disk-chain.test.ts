import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { backingChain, replaceWithOverlay } from "../src/workspaces/disk-chain.js";

function overlay(path: string, backing: string, format: "raw" | "qcow2"): void {
  const r = spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", backing, "-F", format, path], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
}

describe("qcow2 backing chains, read from the images", () => {
  let dir: string;
  after(async () => rm(dir, { recursive: true, force: true }));

  it("lists every layer a disk reads through, and fails when one is missing", async () => {
    dir = await mkdtemp(join(tmpdir(), "pyro-chain-"));
    const base = join(dir, "base.raw");
    await writeFile(base, Buffer.alloc(1024 * 1024));
    overlay(join(dir, "snap.qcow2"), base, "raw");
    overlay(join(dir, "live.qcow2"), join(dir, "snap.qcow2"), "qcow2");
    assert.deepEqual(await backingChain(join(dir, "live.qcow2")), [join(dir, "snap.qcow2"), base]);
    assert.deepEqual(await backingChain(base), []);
    await rm(join(dir, "snap.qcow2"));
    await assert.rejects(backingChain(join(dir, "live.qcow2")), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /does not open/.test(e.message));
  });

  it("replaces a disk with a new overlay without a moment where neither exists, leaving no temp file", async () => {
    const base = join(dir, "base.raw");
    const live = join(dir, "live.qcow2");
    await replaceWithOverlay(live, base, "raw");
    assert.deepEqual(await backingChain(live), [base]);
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.includes("partial")),
      [],
    );
  });
});
