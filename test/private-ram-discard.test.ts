import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ensurePrivateRamDiscard, privateRamDiscardEnv } from "../src/runtime/qemu/private-ram-discard.js";

const PAGE = 4096;

/**
 * Punches the first two pages of each file with fallocate(1) — the same glibc fallocate64 QEMU
 * calls — under the given environment; returns each file's allocated bytes afterwards.
 */
async function punchAndMeasure(files: string[], env: Record<string, string>): Promise<number[]> {
  for (const file of files) {
    const r = spawnSync("fallocate", ["--punch-hole", "--offset", "0", "--length", String(2 * PAGE), file], {
      env: { ...process.env, ...env },
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
  }
  return Promise.all(files.map(async (f) => (await stat(f)).blocks * 512));
}

describe("private-ram-discard (preloaded into QEMU for copy-on-write RAM files)", () => {
  let dir: string;
  let library: string | undefined;
  before(async () => {
    dir = await mkdtemp(join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), "ram-discard-"));
    library = await ensurePrivateRamDiscard();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("skips the punch of the one RAM file it is told of, and only that one", async () => {
    assert.ok(library, "the library builds (cargo is part of set-up)");
    const ram = join(dir, "template.ram");
    const disk = join(dir, "disk.img");
    for (const f of [ram, disk]) await writeFile(f, Buffer.alloc(4 * PAGE, 7));
    const [ramBytes, diskBytes] = await punchAndMeasure([ram, disk], await privateRamDiscardEnv(library, ram));
    assert.equal(ramBytes, 4 * PAGE, "the shared RAM file keeps every page");
    assert.equal(diskBytes, 2 * PAGE, "any other file is punched as asked");
  });

  it("without the environment, punches everything (it is inert unless pyro names a file)", async () => {
    const ram = join(dir, "plain.ram");
    await writeFile(ram, Buffer.alloc(4 * PAGE, 7));
    const [bytes] = await punchAndMeasure([ram], { LD_PRELOAD: library! });
    assert.equal(bytes, 2 * PAGE);
  });

  it("refuses, with the reason and the fix, where the library is missing", async () => {
    await assert.rejects(privateRamDiscardEnv(undefined, join(dir, "x.ram")), /private-ram-discard.*punch.*scripts\/setup\.sh/);
  });
});
