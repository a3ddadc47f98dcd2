import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { processStartTime } from "../src/process/process-identity.js";
import { Pyro } from "../src/sdk/pyro.js";
import { SWEEP_REUSE_MS } from "../src/workspaces/workspace-recovery.js";
import { plainWorkspaceRecord } from "../src/workspaces/workspace-lifecycle.js";
import { WorkspaceStore } from "../src/workspaces/workspace-store.js";
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

  it("an operation on one workspace reuses its process's sweep for a second, yet always repairs the workspace it acts on", async () => {
    // A stopped workspace: updates take its lock and need no VM.
    const record = plainWorkspaceRecord("debian:12", { vcpuCount: 1, memMib: 1024 }, 4);
    const store = new WorkspaceStore(testPaths);
    await mkdir(store.dir(record.id), { recursive: true });
    await store.write(record);
    const pyro = new Pyro({ onProgress: () => undefined });
    await pyro.updateWorkspace(record.id, { labels: { step: "1" } }); // sweeps

    const dead = deadPid();
    const elsewhere = "ws-gggggggggggggggggggg";
    await mkdir(join(ROOT, elsewhere), { recursive: true });
    await lockOwnedBy(elsewhere, dead, "create");
    await lockOwnedBy(record.id, dead, "exec");
    const started = performance.now();
    const updated = await pyro.updateWorkspace(record.id, { labels: { step: "2" } });
    assert.ok(performance.now() - started < SWEEP_REUSE_MS, "the second update came within the reuse window");
    // Its own lock's dead holder is repaired under the lock, sweep or not…
    assert.match((await store.read(record.id))?.recovery ?? "", /interrupted 'exec'/);
    assert.equal(updated.labels.step, "2");
    // …while another workspace's leftovers wait for the next sweep…
    assert.ok((await readdir(ROOT)).includes(elsewhere));
    await new Promise((r) => setTimeout(r, SWEEP_REUSE_MS + 100));
    await pyro.updateWorkspace(record.id, { labels: { step: "3" } });
    // …which comes once the window has passed.
    assert.ok(!(await readdir(ROOT)).includes(elsewhere));
  });

  it("an id is never part of a path unless it is one: refs shaped like ids but not are names, and unknown", async () => {
    const pyro = new Pyro({ onProgress: () => undefined });
    for (const ref of ["ws-../../etc", "ws-AAAA", "ws-", "ws-aaaa/.."]) {
      await assert.rejects(
        () => pyro.updateWorkspace(ref, { labels: { a: "1" } }),
        (error: Error & { code?: string }) => error.code === "WORKSPACE_NOT_FOUND",
      );
    }
    assert.ok(!(await readdir(ROOT)).some((n) => n.includes("..")));
  });
});
