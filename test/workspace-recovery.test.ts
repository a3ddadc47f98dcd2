import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { processStartTime } from "../src/process/process-identity.js";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const ROOT = join(testPaths.stateDir, "workspaces");

/** A pid that is certainly dead: a process that already exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

async function lockOwnedBy(id: string, pid: number, purpose: string): Promise<void> {
  await mkdir(join(ROOT, `${id}.lock`), { recursive: true });
  await writeFile(join(ROOT, `${id}.lock`, "owner.json"), JSON.stringify({ pid, start: "1", acquired_at: new Date().toISOString(), purpose }));
}

describe("recovery of what interrupted operations leave on the host (no VM involved)", () => {
  it("the next command removes a half-created workspace with its secrets, stale locks and scratch, says so, and keeps what it cannot read", async () => {
    const dead = deadPid();
    const halfCreated = "ws-aaaaaaaaaaaaaaaaaaaa";
    await mkdir(join(ROOT, halfCreated, "snapshots"), { recursive: true });
    await writeFile(join(ROOT, halfCreated, "secrets.json"), JSON.stringify({ TOKEN: "hunter2" }));
    await lockOwnedBy(halfCreated, dead, "create");
    // A create that died before taking its lock's place in the listing: no lock at all.
    const noLock = "ws-bbbbbbbbbbbbbbbbbbbb";
    await mkdir(join(ROOT, noLock, "snapshots"), { recursive: true });
    await writeFile(join(ROOT, noLock, "secrets.json"), "{}");
    // A delete cut short after the rename, and its lock.
    await mkdir(join(ROOT, `.deleted-ws-cccccccccccccccccccc-${dead}`, "snapshots"), { recursive: true });
    await lockOwnedBy("ws-cccccccccccccccccccc", dead, "delete");
    // Scratch of a lock acquisition that died mid-step.
    await mkdir(join(ROOT, `ws-dddddddddddddddddddd.lock.acquiring-${dead}-0a0b`));
    // A record that does not validate (a newer pyro's?) is never deleted.
    const unreadable = "ws-eeeeeeeeeeeeeeeeeeee";
    await mkdir(join(ROOT, unreadable), { recursive: true });
    await writeFile(join(ROOT, unreadable, "workspace.json"), JSON.stringify({ layout: 99 }));
    // A lock held by a live process (this one) is left alone.
    const busy = "ws-ffffffffffffffffffff";
    await mkdir(join(ROOT, busy, "snapshots"), { recursive: true });
    await mkdir(join(ROOT, `${busy}.lock`));
    await writeFile(
      join(ROOT, `${busy}.lock`, "owner.json"),
      JSON.stringify({ pid: process.pid, start: processStartTime(process.pid), acquired_at: new Date().toISOString(), purpose: "create" }),
    );

    const notices: string[] = [];
    const list = await new Pyro({ onProgress: (m) => notices.push(m) }).listWorkspaces();
    assert.equal(list.count, 0);
    assert.deepEqual((await readdir(ROOT)).sort(), [busy, `${busy}.lock`, unreadable].sort());
    assert.ok(
      notices.some((n) => n.includes(halfCreated) && /interrupted 'create'/.test(n) && /secrets/.test(n)),
      notices.join("\n"),
    );
    assert.ok(
      notices.some((n) => n.includes(noLock)),
      notices.join("\n"),
    );
  });
});
