import assert from "node:assert/strict";
import { lstat, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { processStartTime } from "../src/process/process-identity.js";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

describe("[vm] what makes create and reset fast still gives each workspace its own disks", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("workspaces created without a seed share one cached empty image, and their writes stay their own", TIMEOUT, async () => {
    const a = await pyro.createWorkspace("debian:12");
    created.push(a.workspace_id);
    const b = await pyro.createWorkspace("debian:12");
    created.push(b.workspace_id);
    const seedOf = (id: string) => lstat(join(testPaths.stateDir, "workspaces", id, "seed.ext4"));
    const [sa, sb] = await Promise.all([seedOf(a.workspace_id), seedOf(b.workspace_id)]);
    assert.equal(sa.ino, sb.ino, "one image, linked (no mkfs per create)");
    assert.equal(sa.mode & 0o777, 0o400);
    assert.deepEqual(
      (await readdir(join(testPaths.cacheDir, "empty-seeds"))).filter((n) => n.endsWith(".ext4")),
      ["empty-v1-4g.ext4"],
    );
    const ls = await pyro.execWorkspace(a.workspace_id, ["sh", "-c", "ls -A /workspace; echo a > /workspace/mine; sync"]);
    assert.equal(ls.stdout, "", "an empty /workspace");
    assert.equal((await pyro.execWorkspace(b.workspace_id, ["sh", "-c", "ls -A /workspace"])).stdout, "", "b does not see a's file");
    const diff = await pyro.diffWorkspace(a.workspace_id, { summary: true });
    assert.deepEqual(
      diff.files.map((f) => [f.path, f.status]),
      [["mine", "added"]],
    );
    // Reset puts a back on the shared image, empty again; b is untouched throughout.
    await pyro.resetWorkspace(a.workspace_id);
    assert.equal((await pyro.execWorkspace(a.workspace_id, ["ls", "-A", "/workspace"])).stdout, "");
    assert.equal((await seedOf(a.workspace_id)).ino, sa.ino);
    await pyro.deleteWorkspace(a.workspace_id);
    assert.equal((await seedOf(b.workspace_id)).ino, sb.ino, "deleting a removed its link only");
    assert.equal((await pyro.execWorkspace(b.workspace_id, ["sh", "-c", "echo ok > /workspace/f && cat /workspace/f"])).stdout, "ok\n");
  });

  it("records the VMM's start time with its pid, and a record whose start time is not the process's finds its VM gone", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    const recordPath = join(testPaths.stateDir, "workspaces", ws.workspace_id, "workspace.json");
    const record = JSON.parse(await readFile(recordPath, "utf8"));
    assert.equal(record.vm.pid, ws.vm!.pid);
    assert.equal(record.vm.pid_start, processStartTime(ws.vm!.pid));
    assert.equal((await pyro.execWorkspace(ws.workspace_id, ["true"])).exit_code, 0);
    // The pid now stands for another process as far as the record knows: pyro must not treat the
    // running VMM as this workspace's (the next command's recovery stops the VM no record owns).
    record.vm.pid_start = String(Number(record.vm.pid_start) - 1);
    await writeFile(recordPath, JSON.stringify(record));
    const status = await pyro.statusWorkspace(ws.workspace_id);
    assert.equal(status.state, "stopped");
    assert.match(status.unexpected_stop ?? "", /exited without pyro stopping it/);
    await pyro.listWorkspaces();
    assert.equal(processStartTime(ws.vm!.pid), undefined, "the unowned VM was stopped");
  });
});
