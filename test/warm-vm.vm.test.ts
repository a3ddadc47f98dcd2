import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { processesMentioning, testPaths } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 240_000 };
const IDENTITY = ["sh", "-c", "hostname; cat /proc/sys/kernel/random/uuid; date +%s"];

describe("[vm] the warm VM kept for the next one-shot run", () => {
  const pyro = new Pyro({ warmVm: { environment: "debian:12", minAvailableMib: 0 } });
  after(async () => pyro.close());

  it("serves the next run of its shape from a paused, ready VM that is a machine of its own, then keeps another", TIMEOUT, async () => {
    const first = await pyro.run("debian:12", IDENTITY);
    assert.equal(first.exit_code, 0, first.stderr);
    assert.equal(await pyro.warmUp(), true);
    const kept = await processesMentioning(testPaths.runtimeDir);
    assert.equal(kept.length, 1, "one VM kept");
    const second = await pyro.run("debian:12", IDENTITY);
    assert.equal(second.exit_code, 0, second.stderr);
    assert.equal((await processesMentioning(testPaths.runtimeDir)).includes(kept[0]!), false, "the kept VM ran it and is gone");
    const [host1, uuid1] = first.stdout.split("\n");
    const [host2, uuid2, clock] = second.stdout.split("\n");
    assert.notEqual(host2, host1);
    assert.notEqual(uuid2, uuid1);
    assert.ok(Math.abs(Number(clock) - Date.now() / 1000) < 3, `guest clock ${clock} is the host's`);
    console.log(`run: ${first.total_ms} ms from the template, ${second.total_ms} ms from the warm VM`);
    // A run of another shape, or with a NIC, starts its own VM and leaves the kept one alone.
    assert.equal(await pyro.warmUp(), true);
    const next = await processesMentioning(testPaths.runtimeDir);
    assert.equal(next.length, 1);
    assert.equal((await pyro.run("debian:12", ["true"], { memMib: 512 })).exit_code, 0);
    assert.deepEqual(await processesMentioning(testPaths.runtimeDir), next);
    await pyro.close();
    assert.deepEqual(await processesMentioning(testPaths.runtimeDir), [], "closing stops it");
  });

  it("keeps none while host memory is low", TIMEOUT, async () => {
    const starved = new Pyro({ warmVm: { environment: "debian:12", minAvailableMib: 10 ** 9 } });
    try {
      assert.equal(await starved.warmUp(), false);
      assert.equal((await starved.run("debian:12", ["true"])).exit_code, 0);
      assert.equal(await starved.warmUp(), false);
      assert.deepEqual(await processesMentioning(testPaths.runtimeDir), []);
    } finally {
      await starved.close();
    }
  });
});
