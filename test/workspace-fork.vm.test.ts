import assert from "node:assert/strict";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { forkMemoryFiles } from "./helpers/fork-memory-files.js";
import { processesMentioning, testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

/** The fork RAM files on the memory filesystem, for this test's templates. */
const forkMemoryFilesHere = () => forkMemoryFiles(testPaths);

async function out(id: string, command: string): Promise<string> {
  const r = await pyro.execWorkspace(id, command);
  assert.equal(r.exit_code, 0, `${command}: ${r.stderr}`);
  return r.stdout;
}

/** Reads a shell from `cursor` until its plain output matches. */
async function readUntil(id: string, shellId: string, cursor: number, pattern: RegExp): Promise<string> {
  let output = "";
  let next = cursor;
  const deadline = Date.now() + 60_000;
  while (!pattern.test(output)) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${pattern}; got ${JSON.stringify(output)}`);
    const r = await pyro.readShell(id, shellId, { cursor: next, waitForIdleMs: 300, plain: true });
    output += r.output;
    next = r.next_cursor;
  }
  return output;
}

describe("[vm] workspace fork", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("copies continue from the source's memory and disks (files, processes, shells, services) and stay isolated both ways", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12")).workspace_id;
    created.push(source);
    await out(source, "echo seed-era > /workspace/a.txt; echo root-disk > /root/r.txt; echo in-ram > /dev/shm/m.txt");
    await out(source, "nohup sleep 4242 >/dev/null 2>&1 &");
    await pyro.startService(source, "ticker", ["sh", "-c", "while true; do date +%s%N >> /tmp/ticks; sleep 0.2; done"]);
    const shell = await pyro.openShell(source);
    await pyro.writeShell(source, shell.shell_id, "export FORKVAR=from-source-shell");
    await readUntil(source, shell.shell_id, 0, /FORKVAR=from-source-shell\n[^\n]*#/);

    const fork = await pyro.forkWorkspace(source, { count: 2, names: ["fork-one"] });
    assert.equal(fork.source_workspace_id, source);
    assert.equal(fork.memory, "mapped", String(fork.note));
    assert.equal(fork.forks.length, 2);
    for (const f of fork.forks) created.push(f.workspace_id);
    assert.equal(fork.forks[0]!.name, "fork-one");
    assert.equal(fork.forks[1]!.name, null);
    const ids = fork.forks.map((f) => f.workspace_id);
    for (const f of fork.forks) {
      assert.equal(f.state, "running");
      assert.equal(f.vm?.start_mode, "fork_restore");
      assert.notEqual(f.workspace_id, source);
    }
    // The source kept running and still answers.
    assert.equal((await pyro.statusWorkspace(source)).state, "running");
    assert.equal(await out(source, "cat /workspace/a.txt"), "seed-era\n");

    for (const id of ids) {
      // Disk (both disks), guest memory (tmpfs) and processes came along.
      assert.equal(await out(id, "cat /workspace/a.txt /root/r.txt /dev/shm/m.txt"), "seed-era\nroot-disk\nin-ram\n");
      assert.match(await out(id, "pgrep -a sleep || true"), /sleep 4242/);
      // The service keeps running in the copy: its output file keeps growing there.
      const before = Number((await out(id, "wc -l < /tmp/ticks")).trim());
      await new Promise((r) => setTimeout(r, 1500));
      const later = Number((await out(id, "wc -l < /tmp/ticks")).trim());
      assert.ok(later > before, `service ticks ${before} -> ${later} in fork ${id}`);
      assert.ok((await pyro.listServices(id)).services.some((s) => s.name === "ticker" && s.state === "running"));
      // The shell continues with its state.
      await pyro.writeShell(id, shell.shell_id, "echo VAR=$FORKVAR");
      await readUntil(id, shell.shell_id, 0, /VAR=from-source-shell/);
      // Its own machine: hostname, machine-id.
      assert.equal((await out(id, "hostname")).trim(), id);
    }
    const machineIds = await Promise.all([source, ...ids].map((id) => out(id, "cat /etc/machine-id")));
    assert.equal(new Set(machineIds).size, 3, machineIds.join(" "));
    const random = await Promise.all([source, ...ids].map((id) => out(id, "od -An -N16 -tx1 /dev/urandom")));
    assert.equal(new Set(random).size, 3);

    // Writes after the fork: each side sees only its own (disk and memory), both ways and between siblings.
    await out(ids[0]!, "echo fork0 > /workspace/f0.txt; echo fork0 > /dev/shm/f0; echo fork0 > /root/f0");
    await out(source, "echo src > /workspace/after.txt; echo src > /dev/shm/after");
    assert.equal(await out(source, "ls /workspace/f0.txt /dev/shm/f0 /root/f0 2>/dev/null; true"), "");
    assert.equal(await out(ids[1]!, "ls /workspace/f0.txt /dev/shm/f0 /root/f0 /workspace/after.txt /dev/shm/after 2>/dev/null; true"), "");
    assert.equal(await out(ids[0]!, "ls /workspace/after.txt /dev/shm/after 2>/dev/null; true"), "");
    // Each copy has its own command log; the disk layers they start from are one set of bytes, linked.
    assert.ok((await pyro.logsWorkspace(ids[0]!)).count > (await pyro.logsWorkspace(ids[1]!)).count);
    const layer = (id: string) => stat(join(testPaths.stateDir, "workspaces", id, "fork-base", "workspace.qcow2"));
    const [l0, l1] = await Promise.all(ids.map(layer));
    assert.equal(l0!.ino, l1!.ino);
    assert.equal(l0!.nlink, 2);
    // Diff of a copy is against the source's baseline (the seed): it shows what the source had done too.
    const changed = (await pyro.diffWorkspace(ids[0]!, { summary: true })).files.map((f: { path: string }) => f.path).sort();
    assert.deepEqual(changed, ["a.txt", "f0.txt"]);

    // One RAM file serves both copies; the source never mapped it.
    const files = await forkMemoryFilesHere();
    assert.equal(files.length, 1, files.join(" "));
    assert.equal((await processesMentioning(files[0]!)).length, 2);

    // The copies own their disks: deleting the source takes nothing from under them.
    await pyro.deleteWorkspace(source);
    assert.equal(await out(ids[0]!, "cat /workspace/a.txt /workspace/f0.txt"), "seed-era\nfork0\n");
    const reset = await pyro.resetWorkspace(ids[0]!);
    assert.equal(reset.start_mode, "template_restore");
    assert.equal(await out(ids[0]!, "ls /workspace; cat /root/r.txt 2>/dev/null; true"), "");
    // Reset replaced one mapper; the file goes with the last.
    assert.equal((await forkMemoryFilesHere()).length, 1);
    await pyro.deleteWorkspace(ids[1]!);
    assert.deepEqual(await forkMemoryFilesHere(), []);
  });

  it("a copy forks again: its copy maps a RAM file of its own and outlives both ancestors", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12")).workspace_id;
    created.push(source);
    await out(source, "echo gen0 > /workspace/g0; echo gen0 > /dev/shm/g0");
    const child = (await pyro.forkWorkspace(source)).forks[0]!.workspace_id;
    created.push(child);
    await out(child, "echo gen1 > /workspace/g1; echo gen1 > /dev/shm/g1");
    await pyro.createSnapshot(child, "mid");
    const second = await pyro.forkWorkspace(child);
    assert.equal(second.memory, "mapped", String(second.note));
    const grandchild = second.forks[0]!.workspace_id;
    created.push(grandchild);
    await pyro.deleteWorkspace(source);
    await pyro.deleteWorkspace(child);
    assert.equal(await out(grandchild, "cat /workspace/g0 /workspace/g1 /dev/shm/g0 /dev/shm/g1"), "gen0\ngen1\ngen0\ngen1\n");
    // Its baseline is the first source's (the template and the seed image it now holds itself).
    await pyro.resetWorkspace(grandchild);
    assert.equal(await out(grandchild, "ls /workspace"), "");
    assert.deepEqual(
      (await pyro.listSnapshots(grandchild)).snapshots.map((s) => s.name),
      ["baseline"],
    );
  });

  it("a stopped workspace forks from its disks: stopped copies that start with its files", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12")).workspace_id;
    created.push(source);
    await out(source, "echo kept > /workspace/k.txt");
    await pyro.stopWorkspace(source);
    const fork = await pyro.forkWorkspace(source);
    for (const f of fork.forks) created.push(f.workspace_id);
    assert.equal(fork.memory, "none");
    assert.match(String(fork.note), /stopped/);
    const [copy] = fork.forks;
    assert.equal(copy!.state, "stopped");
    await pyro.startWorkspace(copy!.workspace_id);
    assert.equal(await out(copy!.workspace_id, "cat /workspace/k.txt"), "kept\n");
    await out(copy!.workspace_id, "echo copy > /workspace/c.txt");
    await pyro.startWorkspace(source);
    assert.equal(await out(source, "cat /workspace/k.txt; ls /workspace/c.txt 2>/dev/null; true"), "kept\n");
  });

  it("a networked workspace's copies get their own NIC and egress proxy (its RAM is anonymous: streamed)", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12", { networkPolicy: "egress" })).workspace_id;
    created.push(source);
    // What the proxy answers for the host's loopback: a refusal, from the VM's own proxy.
    const probe = "curl -sS -m 60 --noproxy '' -o /dev/null -w '%{http_code}' http://127.0.0.1:9/ 2>&1; true";
    const refused = await out(source, probe);
    assert.match(refused, /^4\d\d$/);
    const fork = await pyro.forkWorkspace(source);
    const copy = fork.forks[0]!.workspace_id;
    created.push(copy);
    assert.equal(fork.memory, "streamed");
    assert.match(String(fork.note), /anonymous/);
    assert.equal(fork.forks[0]!.vm?.start_mode, "fork_restore");
    // The egress server (a node process) names its VM's run directory in its --listen argument.
    const egressOf = async (id: string) => {
      let n = 0;
      for (const entry of await readdir("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        const cmdline = await readFile(join("/proc", entry, "cmdline"), "utf8").catch(() => "");
        if (cmdline.includes(`--listen=${join(testPaths.runtimeDir, id, "egress.sock")}`)) n++;
      }
      return n;
    };
    assert.ok((await egressOf(copy)) > 0, "the copy has no egress proxy of its own");
    assert.ok((await egressOf(source)) > 0, "the source lost its egress proxy");
    assert.equal(await out(copy, probe), refused);
    // The copy's proxy is its own: it keeps serving with the source gone.
    await pyro.deleteWorkspace(source);
    assert.equal(await out(copy, probe), refused);
    // Its baseline is the source's saved one (a cold-booted source), now held by the copy itself.
    await out(copy, "echo later > /workspace/later.txt");
    const reset = await pyro.resetWorkspace(copy);
    assert.equal(reset.start_mode, "snapshot_restore");
    assert.equal(await out(copy, "ls /workspace"), "");
    assert.equal(await out(copy, probe), refused);
  });

  it("refuses bad counts and names before touching the source", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12", { name: "fork-bounds-src" })).workspace_id;
    created.push(source);
    const before = (await pyro.listWorkspaces()).count;
    for (const options of [
      { count: 0 },
      { count: 9 },
      { count: 1.5 },
      { count: 1, names: ["a", "b"] },
      { names: ["x", "x"] },
      { names: ["ws-bad"] },
      { names: ["fork-bounds-src"] },
    ]) {
      await assert.rejects(pyro.forkWorkspace(source, options), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT", JSON.stringify(options));
    }
    assert.equal((await pyro.listWorkspaces()).count, before);
    assert.equal((await pyro.statusWorkspace(source)).state, "running");
    const vmFile = await readFile(`/proc/${(await pyro.statusWorkspace(source)).vm!.pid}/status`, "utf8");
    assert.match(vmFile, /State:\s+S|State:\s+R/);
  });
});
