/**
 * What one workspace exec costs the guest, with a real VM: the command's writes are on the VM's
 * disks when exec returns (the agent flushes before its reply, no separate sync), and an agent with
 * no host connected sleeps instead of waking several times a second (an idle VM's host CPU).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { processAlive } from "../src/process/process-alive.js";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths, waitFor } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

/** Voluntary context switches of the agent's host-serving thread (PID 1's main thread). */
async function agentWakeups(id: string): Promise<number> {
  const status = (await pyro.execWorkspace(id, ["cat", "/proc/1/task/1/status"])).stdout;
  const match = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status);
  assert.ok(match, `no context switch count in:\n${status}`);
  return Number(match[1]);
}

describe("[vm] workspace exec: flushed on return, quiet when idle", () => {
  let id: string;
  before(async () => {
    id = (await pyro.createWorkspace("debian:12")).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("a command's writes survive the VMM killed the moment exec returns", TIMEOUT, async () => {
    // Both disks: /workspace and the root disk. Unflushed, the guest would hold them in its page
    // cache for up to 30 s (dirty_expire) and the kill would lose them.
    const wrote = await pyro.execWorkspace(id, [
      "sh",
      "-c",
      "head -c 262144 /dev/urandom > /workspace/flushed && echo root-disk > /etc/pyro-flushed && sha256sum /workspace/flushed",
    ]);
    const pid = (await pyro.statusWorkspace(id)).vm!.pid;
    process.kill(pid, "SIGKILL");
    await waitFor("the VMM to exit", async () => (processAlive(pid) ? undefined : true), 10_000);
    await pyro.startWorkspace(id);
    const read = await pyro.execWorkspace(id, ["sh", "-c", "sha256sum /workspace/flushed && cat /etc/pyro-flushed"]);
    assert.equal(read.exit_code, 0, read.stderr);
    assert.equal(read.stdout, `${wrote.stdout}root-disk\n`);
  });

  it("the record counts each command that ran once, not one that failed to start, and a long one's end as last activity", TIMEOUT, async () => {
    const before = (await pyro.statusWorkspace(id)).command_count;
    const ran = await pyro.execWorkspace(id, ["true"]);
    assert.equal(ran.sequence, before + 1);
    assert.equal((await pyro.statusWorkspace(id)).command_count, before + 1);
    // The guest refuses to start it (no such directory): nothing ran, nothing is counted or logged.
    await assert.rejects(() => pyro.execWorkspace(id, ["true"], { cwd: "/workspace/no-such-dir" }));
    assert.equal((await pyro.statusWorkspace(id)).command_count, before + 1);
    assert.equal((await pyro.logsWorkspace(id)).commands.at(-1)?.sequence, before + 1);
    // Counted as it starts, yet the TTL's clock restarts at its end.
    const long = await pyro.execWorkspace(id, ["sleep", "1.5"]);
    const returned = Date.now();
    const status = await pyro.statusWorkspace(id);
    assert.equal(long.sequence, before + 2);
    assert.equal(status.command_count, before + 2);
    assert.ok(returned - Date.parse(status.last_activity_at) < 1_000, `last activity ${status.last_activity_at} is the command's start, not its end`);
  });

  it("a record that cannot be written fails the exec with an error, not the process", TIMEOUT, async (t) => {
    // Written while the guest runs the command: its failure waits for the guest's answer, and must
    // not meanwhile count as an unhandled rejection (which ends a Node process, an MCP server too).
    const dir = join(testPaths.stateDir, "workspaces", id);
    if (spawnSync("chattr", ["+i", dir]).status !== 0) return t.skip("chattr +i is not supported here");
    try {
      await assert.rejects(() => pyro.execWorkspace(id, ["sleep", "0.3"]), /EPERM|not permitted/);
    } finally {
      spawnSync("chattr", ["-i", dir]);
    }
    assert.equal((await pyro.execWorkspace(id, ["true"])).exit_code, 0);
  });

  it("an agent with no host connected wakes about once a second at most, not ten times", TIMEOUT, async () => {
    const before = await agentWakeups(id);
    const idleMs = 6_000;
    await new Promise((r) => setTimeout(r, idleMs));
    const woke = (await agentWakeups(id)) - before;
    // One timeout a second plus the two connections' own handful; a 100 ms bound made it 60+.
    assert.ok(woke < 30, `the agent's serving thread woke ${woke} times in ${idleMs / 1000} s with no host connected`);
  });
});
