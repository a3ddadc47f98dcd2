import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";
import { CLI, processesMentioning, testPaths } from "./helpers/vm-fixtures.js";
import { makeTar } from "./helpers/tar-builder.js";
import { makeSeedRepo } from "./helpers/workspace-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 200_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("[vm] workspace lifecycle", () => {
  let seed: Awaited<ReturnType<typeof makeSeedRepo>>;
  const created: string[] = [];
  before(async () => {
    seed = await makeSeedRepo();
  });
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
    await seed.dispose();
  });

  it("creates a seeded, named, labelled workspace that later pyro processes can use", TIMEOUT, async () => {
    const name = `life-${process.pid}`;
    const r = cli(["workspace", "create", "debian:12", "--seed-path", seed.dir, "--name", name, "--label", "team=qa", "--json"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const ws = JSON.parse(r.stdout);
    created.push(ws.workspace_id);
    assert.match(ws.workspace_id, /^ws-[a-z2-7]{20}$/);
    assert.equal(ws.state, "running");
    assert.deepEqual(ws.labels, { team: "qa" });
    assert.equal(ws.workspace_seed.mode, "directory");
    assert.equal(ws.workspace_seed.origin_kind, "seed_path");
    assert.equal(ws.workspace_seed.files, 4);
    assert.deepEqual(ws.snapshots, ["baseline"]);
    // A separate process, by name: the VM outlived the process that created it.
    const exec = cli(["workspace", "exec", name, "--json", "--", "sh", "-c", "cat README.md; pwd"]);
    assert.equal(exec.code, 0, exec.stderr);
    assert.equal(JSON.parse(exec.stdout).stdout, "demo\n/workspace\n");
    const listed = (await pyro.listWorkspaces()).workspaces.find((w) => w.workspace_id === ws.workspace_id);
    assert.equal(listed?.name, name);
    await assert.rejects(pyro.createWorkspace("debian:12", { name }), (e) => isPyroError(e, "INVALID_ARGUMENT") && /already used/.test(e.message));
    const updated = await pyro.updateWorkspace(name, { name: `${name}-renamed`, labels: { stage: "2" }, clearLabels: ["team"] });
    assert.equal(updated.name, `${name}-renamed`);
    assert.deepEqual(updated.labels, { stage: "2" });
  });

  it("keeps files across stop/start, and after the VMM is killed behind pyro's back", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    assert.equal(ws.vm?.start_mode, "template_restore");
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo persisted > kept.txt"]);
    const stopped = await pyro.stopWorkspace(ws.workspace_id);
    assert.equal(stopped.state, "stopped");
    await assert.rejects(pyro.execWorkspace(ws.workspace_id, ["true"]), (e) => isPyroError(e, "WORKSPACE_STOPPED") && /pyro workspace start/.test(e.message));
    await pyro.startWorkspace(ws.workspace_id);
    assert.equal((await pyro.readWorkspaceFile(ws.workspace_id, "kept.txt")).content, "persisted\n");

    await pyro.writeWorkspaceFile(ws.workspace_id, "second.txt", "also kept\n");
    const pid = (await pyro.statusWorkspace(ws.workspace_id)).vm!.pid;
    process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    const status = await pyro.statusWorkspace(ws.workspace_id);
    assert.equal(status.state, "stopped");
    assert.match(status.unexpected_stop ?? "", /exited without pyro stopping it/);
    await pyro.startWorkspace(ws.workspace_id);
    assert.equal((await pyro.readWorkspaceFile(ws.workspace_id, "second.txt")).content, "also kept\n");
    assert.equal((await pyro.readWorkspaceFile(ws.workspace_id, "kept.txt")).content, "persisted\n");
  });

  it("serialises concurrent pyro processes on one workspace", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    const runs = [0, 1, 2].map(
      (i) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn(process.execPath, [CLI, "workspace", "exec", ws.workspace_id, "--json", "--", "sh", "-c", `echo run-${i} >> order.txt`]);
          let out = "";
          child.stdout.on("data", (d) => (out += d));
          child.on("exit", (code) => resolve({ code, out }));
        }),
    );
    const results = await Promise.all(runs);
    for (const r of results) assert.equal(r.code, 0);
    const sequences = results.map((r) => JSON.parse(r.out).sequence).sort();
    assert.deepEqual(sequences, [1, 2, 3]);
    const order = (await pyro.readWorkspaceFile(ws.workspace_id, "order.txt")).content.trim().split("\n").sort();
    assert.deepEqual(order, ["run-0", "run-1", "run-2"]);
    assert.equal((await pyro.logsWorkspace(ws.workspace_id)).count, 3);
  });

  it("deletes everything: VM process, run directory and files", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    const dir = `${testPaths.stateDir}/workspaces/${ws.workspace_id}`;
    assert.ok(await stat(dir).then(() => true));
    await pyro.deleteWorkspace(ws.workspace_id);
    assert.deepEqual(await processesMentioning(ws.workspace_id), []);
    assert.equal(
      await stat(dir).then(
        () => true,
        () => false,
      ),
      false,
    );
    await assert.rejects(pyro.statusWorkspace(ws.workspace_id), (e) => isPyroError(e, "WORKSPACE_NOT_FOUND") && /pyro workspace list/.test(e.message));
  });

  it("expires workspaces idle past their TTL", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12", { ttlSeconds: 1 });
    created.push(ws.workspace_id);
    assert.ok(ws.expires_at);
    await new Promise((r) => setTimeout(r, 1500));
    const list = await pyro.listWorkspaces();
    assert.equal(
      list.workspaces.some((w) => w.workspace_id === ws.workspace_id),
      false,
    );
    assert.deepEqual(await processesMentioning(ws.workspace_id), []);
  });

  it("refuses a hostile seed archive before creating anything", TIMEOUT, async () => {
    const dir = await mkdtemp("/tmp/pyro-hostile-");
    try {
      await writeFile(`${dir}/evil.tar`, makeTar([{ path: "../../escape.txt", content: "x" }]));
      const before = (await pyro.listWorkspaces()).count;
      await assert.rejects(pyro.createWorkspace("debian:12", { seedPath: `${dir}/evil.tar` }), (e) => isPyroError(e, "UNSAFE_ARCHIVE"));
      assert.equal((await pyro.listWorkspaces()).count, before);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
