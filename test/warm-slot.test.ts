import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hostCanKeepWarmVm, WarmSlot } from "../src/runtime/warm-slot.js";

/** A kept thing whose loss the test controls, and a record of what the slot threw away. */
function harness(options: { fail?: boolean; none?: boolean; slow?: boolean } = {}) {
  let made = 0;
  const discarded: number[] = [];
  const losers = new Map<number, () => void>();
  const slot = new WarmSlot<number>({
    prepare: async () => {
      if (options.fail) throw new Error("boot failed");
      if (options.none) return undefined;
      if (options.slow) await new Promise((r) => setTimeout(r, 50));
      const item = ++made;
      return item;
    },
    lost: (item) => new Promise<void>((resolve) => losers.set(item, resolve)),
    discard: async (item) => void discarded.push(item),
  });
  return { slot, discarded, lose: (item: number) => losers.get(item)?.(), made: () => made };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("WarmSlot", () => {
  it("keeps one, hands it out once, and makes another only on the next fill", async () => {
    const { slot, made } = harness();
    assert.equal(await slot.claim(), undefined, "nothing before a fill");
    assert.equal(await slot.fill(), true);
    assert.equal(await slot.fill(), true, "a second fill keeps the same one");
    assert.equal(made(), 1);
    assert.equal(await slot.claim(), 1);
    assert.equal(await slot.claim(), undefined, "taken once");
    assert.equal(await slot.fill(), true);
    assert.equal(await slot.claim(), 2);
  });

  it("never makes a caller wait for one still being made", async () => {
    const { slot } = harness({ slow: true });
    const filling = slot.fill();
    assert.equal(await slot.claim(), undefined);
    assert.equal(await filling, true);
    assert.equal(await slot.claim(), 1, "ready for the next caller");
  });

  it("throws away one lost behind its back (its files and lock with it), and the next fill makes another", async () => {
    const { slot, discarded, lose } = harness();
    await slot.fill();
    lose(1);
    await tick();
    assert.deepEqual(discarded, [1]);
    assert.equal(await slot.claim(), undefined);
    assert.equal(await slot.fill(), true);
    assert.equal(await slot.claim(), 2);
    lose(2);
    await tick();
    assert.deepEqual(discarded, [1], "a taken one is the taker's, lost or not");
  });

  it("empties and closes: nothing kept, nothing made after close (one finished after close is thrown away)", async () => {
    const { slot, discarded } = harness();
    await slot.fill();
    await slot.empty();
    assert.deepEqual(discarded, [1]);
    const late = slot.fill();
    await slot.close();
    assert.equal(await late, false);
    assert.deepEqual(discarded, [1, 2]);
    assert.equal(await slot.fill(), false);
    assert.equal(await slot.claim(), undefined);
  });

  it("a failed or declined preparation keeps nothing and lets the next fill try again", async () => {
    for (const options of [{ fail: true }, { none: true }]) {
      const { slot } = harness(options);
      assert.equal(await slot.fill(), false);
      await tick();
      assert.equal(await slot.claim(), undefined);
    }
  });

  it("keeps none below the host memory floor", async () => {
    assert.equal(await hostCanKeepWarmVm(10 ** 9), false);
    assert.equal(await hostCanKeepWarmVm(0), true);
  });
});
