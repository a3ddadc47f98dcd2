import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { newWorkspaceId, WorkspaceStore } from "../src/workspaces/workspace-store.js";
import { testPaths } from "./helpers/vm-fixtures.js";

// Real file locks and claim files in this test's own state dir; no VM is needed to race two claims.
const store = new WorkspaceStore(testPaths);

/** Holds `id`'s lock and a claim on `name` until `until` settles; resolves whether the claim was granted. */
function claimWhileLocked(id: string, name: string, until: Promise<void>): Promise<boolean> {
  return store.withLock(id, "test", async () => {
    let claim: Awaited<ReturnType<WorkspaceStore["claimName"]>>;
    try {
      claim = await store.claimName(name, id);
    } catch (error) {
      assert.match((error as Error).message, /is being given to workspace ws-/);
      return false;
    }
    await until;
    await claim.release();
    return true;
  });
}

describe("workspace names are claimed under the claimant's lock, so concurrent creates, forks and renames cannot share one", () => {
  it("of eight operations claiming one name at once, exactly one gets it; once it lets go, the name is free again", async () => {
    let finish = (): void => undefined;
    const held = new Promise<void>((r) => (finish = r));
    const ids = Array.from({ length: 8 }, () => newWorkspaceId());
    const outcomes = ids.map((id) => claimWhileLocked(id, "shared-name", held));
    // The losers answer while the winner still holds its claim.
    const settled = await Promise.all(outcomes.map((o) => Promise.race([o, new Promise((r) => setTimeout(() => r("pending"), 3000))])));
    assert.equal(settled.filter((o) => o === "pending").length, 1, `one claim is held: ${settled.join(" ")}`);
    assert.equal(settled.filter((o) => o === false).length, 7);
    finish();
    assert.equal((await Promise.all(outcomes)).filter(Boolean).length, 1);
    assert.equal(await claimWhileLocked(newWorkspaceId(), "shared-name", Promise.resolve()), true, "released: free again");
  });

  it("a claim left by an operation that died (its lock not held) does not keep the name", async () => {
    const dead = newWorkspaceId();
    // Claimed and never released: what a pyro killed between its claim and its record leaves.
    await store.withLock(dead, "test", async () => {
      await store.claimName("orphaned", dead);
    });
    assert.equal(await readFile(join(store.rootDir, ".names", "n-orphaned"), "utf8"), dead, "the claim is still there");
    assert.equal(await claimWhileLocked(newWorkspaceId(), "orphaned", Promise.resolve()), true);
  });
});
