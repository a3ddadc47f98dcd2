import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { configurationSection, restorableDeviceState } from "../src/runtime/qemu/device-state.js";
import { findRamMapping, isOwnPage } from "../src/runtime/qemu/ram-capture.js";
import { checkForkOptions } from "../src/workspaces/workspace-fork.js";
import { FORK_COUNT } from "../src/workspaces/workspace-limits.js";

describe("fork capture formats", () => {
  it("writes the configuration section QEMU 7.2 itself writes for a microvm migration with x-ignore-shared", () => {
    // Bytes 8..0x4c of a template state saved by `migrate` with x-ignore-shared on (this QEMU, microvm).
    const fromQemu = "07000000076d6963726f766d051a636f6e66696775726174696f6e2f6361706162696c697469657300000001000000010f782d69676e6f72652d736861726564";
    assert.equal(configurationSection().toString("hex"), fromQemu);
  });

  it("puts it between the file header and the first section, and ends the stream with an empty vmdescription", () => {
    const raw = Buffer.concat([Buffer.from("QEVM\0\0\0\x03", "latin1"), Buffer.from([0x04, 0xaa, 0x00])]);
    const out = restorableDeviceState(raw);
    assert.equal(out.subarray(0, 8).toString("latin1"), "QEVM\0\0\0\x03");
    assert.deepEqual(out.subarray(8, 8 + configurationSection().length), configurationSection());
    assert.equal(out.subarray(8 + configurationSection().length).toString("hex"), "04aa000600000000");
    assert.throws(() => restorableDeviceState(Buffer.from("not a state")), /migration file header/);
  });

  it("finds the one private writable mapping of the RAM file, paths with spaces included", () => {
    const maps = [
      "55d0a0000000-55d0a0100000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64",
      "7f859bfff000-7f85dbfff000 rw-p 00000000 00:1b 10334                      /dev/shm/pyro-0-x/a b.ram",
      "7f85dc000000-7f85dc001000 r--p 00000000 00:1b 10334                      /dev/shm/pyro-0-x/a b.ram.other",
    ].join("\n");
    assert.deepEqual(findRamMapping(maps, "/dev/shm/pyro-0-x/a b.ram"), { start: 0x7f859bfff000, end: 0x7f85dbfff000, fileOffset: 0 });
    assert.equal(findRamMapping(maps, "/dev/shm/other.ram"), undefined);
    // Two writable mappings of the file: ambiguous, never guessed.
    assert.equal(findRamMapping(`${maps}\n${maps.split("\n")[1]}`, "/dev/shm/pyro-0-x/a b.ram"), undefined);
  });

  it("takes a page as the VM's own when it is a present anonymous copy or swapped out", () => {
    const present = 1 << 31;
    const swapped = 1 << 30;
    const file = 1 << 29;
    assert.equal(isOwnPage(present), true);
    assert.equal(isOwnPage(present | file), false);
    assert.equal(isOwnPage(0), false);
    assert.equal(isOwnPage(swapped), true);
  });
});

describe("fork count and names", () => {
  it("accepts exactly the counts in range and at most one distinct valid name per copy", () => {
    fc.assert(
      fc.property(
        fc.option(fc.integer({ min: -2, max: FORK_COUNT.max + 3 }), { nil: undefined }),
        fc.array(fc.constantFrom("a", "b", "c", "ws-x", "-bad", "ok.1"), { maxLength: 10 }),
        (count, names) => {
          const effective = count ?? Math.max(names.length, FORK_COUNT.default);
          const valid =
            effective >= FORK_COUNT.min &&
            effective <= FORK_COUNT.max &&
            names.length <= effective &&
            new Set(names).size === names.length &&
            names.every((n) => /^[A-Za-z0-9]/.test(n) && !n.startsWith("ws-"));
          let accepted: ReturnType<typeof checkForkOptions> | undefined;
          try {
            accepted = checkForkOptions({ ...(count !== undefined ? { count } : {}), names });
          } catch (error) {
            assert.equal((error as { code?: string }).code, "INVALID_ARGUMENT");
          }
          assert.equal(accepted !== undefined, valid, JSON.stringify({ count, names }));
          if (accepted) {
            assert.equal(accepted.count, effective);
            assert.deepEqual(accepted.names.slice(0, names.length), names);
            assert.equal(accepted.names.length, effective);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
