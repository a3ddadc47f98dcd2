import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { PyroError } from "../src/errors.js";
import { findExecutable } from "../src/process/host-command.js";
import { diskChain, parseQcow2Header, readQcow2Header } from "../src/storage/qcow2-backing-chain.js";

describe("qcow2 backing chain (what a sandboxed qemu-img may see)", () => {
  it("walks a real overlay chain, relative and absolute backing names, to the raw base", {
    skip: findExecutable("qemu-img") ? false : "needs qemu-img",
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-chain-"));
    try {
      await writeFile(join(dir, "base.raw"), Buffer.alloc(1 << 20));
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", join(dir, "base.raw"), "-F", "raw", join(dir, "mid.qcow2")]);
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", join(dir, "top.qcow2")]);
      const chain = await diskChain(join(dir, "top.qcow2"));
      assert.deepEqual(chain.files, [join(dir, "top.qcow2"), join(dir, "mid.qcow2"), join(dir, "base.raw")]);
      assert.equal(chain.virtualSize, 1 << 20);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("any header bytes give a result or a PyroError, never a crash", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 104 }), fc.boolean(), fc.uint8Array({ maxLength: 40 }), (bytes, magic, name) => {
        const head = Buffer.from(bytes);
        if (magic && head.length >= 4) head.writeUInt32BE(0x514649fb, 0);
        try {
          const h = parseQcow2Header(head, () => Buffer.from(name));
          if (h?.backing !== undefined) assert.ok(!h.backing.includes("\0"));
          // The external-data-file bit is only read from a complete version 3 header.
          if (h?.externalDataFile) assert.ok(head.length >= 80 && head.readUInt32BE(4) >= 3 && (head[79]! & 4) !== 0);
        } catch (error) {
          assert.ok(error instanceof PyroError);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("reports a real image's external data file (qcow2 v3 incompatible feature bit 2)", {
    skip: findExecutable("qemu-img") ? false : "needs qemu-img",
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-datafile-"));
    try {
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `data_file=${join(dir, "data.raw")}`, join(dir, "ext.qcow2"), "1M"]);
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(dir, "plain.qcow2"), "1M"]);
      assert.equal((await readQcow2Header(join(dir, "ext.qcow2")))?.externalDataFile, true);
      assert.equal((await readQcow2Header(join(dir, "plain.qcow2")))?.externalDataFile, undefined);
      assert.equal(await readQcow2Header(join(dir, "data.raw")), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
