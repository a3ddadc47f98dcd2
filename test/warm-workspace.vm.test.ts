import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { QmpClient } from "../src/runtime/qemu/qmp-client.js";
import { Pyro } from "../src/sdk/pyro.js";
import { connectStdio, toolJson } from "./helpers/mcp-client.js";
import { processesMentioning, testPaths } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 300_000 };
const WORKSPACES = join(testPaths.stateDir, "workspaces");
const IDENTITY = "hostname; cat /proc/sys/kernel/random/uuid; cat /etc/machine-id; date +%s";

/** What the state dir holds: workspace dirs, locks, half-deleted dirs (anything but the root's own files). */
async function stateEntries(): Promise<string[]> {
  return (await readdir(WORKSPACES).catch(() => [] as string[])).sort();
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe("[vm] the warm workspace kept for the next unseeded create", () => {
  const pyro = new Pyro({ warmVm: { environment: "debian:12", minAvailableMib: 0 } });
  after(async () => pyro.close());

  it(
    "serves an unseeded create of the default machine from a paused workspace made ahead: its own machine, a truthful record, reset and diff as usual",
    TIMEOUT,
    async () => {
      assert.equal(await pyro.warmUp(), true);
      const kept = await processesMentioning(testPaths.runtimeDir);
      assert.equal(kept.length, 1, "one VM kept");
      const [pending] = (await stateEntries()).filter((n) => n.startsWith("ws-") && !n.endsWith(".lock"));
      assert.ok(pending, "the warm workspace has its directory");
      assert.equal(await exists(join(WORKSPACES, pending, "workspace.json")), false, "and no record until it is taken");
      // Other pyro instances (any command's recovery) leave it alone: its lock is held by a live process.
      const other = new Pyro();
      assert.equal((await other.listWorkspaces()).count, 0);
      assert.deepEqual(await processesMentioning(testPaths.runtimeDir), kept);

      const created = await pyro.createWorkspace("debian:12", { name: "warm-one", labels: { task: "t1" }, ttlSeconds: 3600 });
      console.log(`create from the warm workspace: ${created.create_ms} ms`);
      assert.equal(created.workspace_id, pending);
      assert.equal(created.vm?.pid, kept[0], "the kept VM became the workspace's");
      assert.equal(created.name, "warm-one");
      assert.deepEqual(created.labels, { task: "t1" });
      assert.ok(created.expires_at, "its TTL is recorded");
      assert.deepEqual(created.snapshots, ["baseline"]);
      // The record on disk says the same to another process's view.
      const seen = await other.statusWorkspace("warm-one");
      assert.equal(seen.state, "running");
      assert.equal(seen.vm?.pid, kept[0]);

      const first = await pyro.execWorkspace(created.workspace_id, ["sh", "-c", IDENTITY]);
      assert.equal(first.exit_code, 0, first.stderr);
      const [host, uuid, machineId, clock] = first.stdout.trim().split("\n");
      assert.equal(host, created.workspace_id);
      assert.ok(Math.abs(Number(clock) - Date.now() / 1000) < 3, `guest clock ${clock} is the host's`);

      // /workspace is its own disk: written, diffed, reset to the (template) baseline.
      assert.equal((await pyro.execWorkspace(created.workspace_id, ["sh", "-c", "echo warm > /workspace/a.txt && sync"])).exit_code, 0);
      const diff = await pyro.diffWorkspace(created.workspace_id, { summary: true });
      assert.equal(diff.summary.added, 1);
      await pyro.resetWorkspace(created.workspace_id);
      assert.equal((await pyro.execWorkspace(created.workspace_id, ["test", "-e", "/workspace/a.txt"])).exit_code, 1, "reset to the baseline");

      // The next warm one is another machine: other id, entropy and machine-id.
      assert.equal(await pyro.warmUp(), true);
      const second = await pyro.createWorkspace("debian:12");
      const [, otherUuid, otherMachineId] = (await pyro.execWorkspace(second.workspace_id, ["sh", "-c", IDENTITY])).stdout.trim().split("\n");
      assert.notEqual(second.workspace_id, created.workspace_id);
      assert.notEqual(otherUuid, uuid);
      assert.notEqual(otherMachineId, machineId);

      // A create of another shape, seeded, or with secrets starts its own VM and leaves the kept one alone.
      assert.equal(await pyro.warmUp(), true);
      const owned = new Set((await other.listWorkspaces()).workspaces.map((w) => w.vm?.pid));
      const keptNow = (await processesMentioning(testPaths.runtimeDir)).filter((pid) => !owned.has(pid));
      assert.equal(keptNow.length, 1);
      const seedDir = await mkdtemp(join(tmpdir(), "warm-seed-"));
      await writeFile(join(seedDir, "f.txt"), "seeded\n");
      const others = [
        await pyro.createWorkspace("debian:12", { memMib: 512 }),
        await pyro.createWorkspace("debian:12", { seedPath: seedDir }),
        await pyro.createWorkspace("debian:12", { secrets: { TOKEN: "s3cret" } }),
      ];
      await rm(seedDir, { recursive: true, force: true });
      for (const made of others) assert.notEqual(made.vm?.pid, keptNow[0]);
      assert.ok((await processesMentioning(testPaths.runtimeDir)).includes(keptNow[0]!), "the kept VM is still kept");
      assert.deepEqual(others[2]!.secret_names, ["TOKEN"]);
      assert.equal(others[1]!.workspace_seed.files, 1);

      for (const id of [created.workspace_id, second.workspace_id, ...others.map((o) => o.workspace_id)]) await pyro.deleteWorkspace(id);
      await pyro.close();
      assert.deepEqual(await processesMentioning(testPaths.runtimeDir), [], "closing stops the kept VM");
      assert.deepEqual(
        (await stateEntries()).filter((n) => n.startsWith("ws-")),
        [],
        "and leaves no directory or lock",
      );
    },
  );

  it("keeps none while host memory is low", TIMEOUT, async () => {
    const starved = new Pyro({ warmVm: { environment: "debian:12", minAvailableMib: 10 ** 9 } });
    try {
      const vms = await processesMentioning(testPaths.runtimeDir);
      const entries = await stateEntries();
      assert.equal(await starved.warmUp(), false);
      assert.deepEqual(await processesMentioning(testPaths.runtimeDir), vms);
      assert.deepEqual(await stateEntries(), entries);
    } finally {
      await starved.close();
    }
  });
});

describe("[vm] pyro mcp serve keeps a warm workspace by default", () => {
  it("one is made at start and serves the first unseeded workspace_create, then the next; --no-warm-vm keeps none", TIMEOUT, async () => {
    for (const warm of [true, false]) {
      const { client } = await connectStdio(warm ? [] : ["--no-warm-vm"]);
      const made: string[] = [];
      try {
        for (const which of ["first", "second"]) {
          // The made-ahead workspace shows as a directory without a record (its create is not finished).
          // With --no-warm-vm, 5 s of nothing made is enough.
          const pending = await madeAhead(made, warm ? 60_000 : 5_000);
          if (warm) await waitForPaused(pending);
          assert.equal(pending !== undefined, warm, warm ? `a workspace made ahead of the ${which} create` : "none made ahead");
          const created = toolJson<{ workspace_id: string; create_ms: number }>(await client.callTool({ name: "workspace_create", arguments: {} }));
          made.push(created.workspace_id);
          if (warm) assert.equal(created.workspace_id, pending, `the ${which} create is the one made ahead (${created.create_ms} ms)`);
        }
      } finally {
        for (const id of made) await client.callTool({ name: "workspace_delete", arguments: { workspace_id: id } }).catch(() => undefined);
        await client.close();
      }
    }
  });
});

/** A workspace being made ahead (a directory without a record), other than those `made`, within `waitMs`. */
async function madeAhead(made: string[], waitMs: number): Promise<string | undefined> {
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    const entries = (await stateEntries()).filter((n) => /^ws-[a-z2-7]+$/.test(n) && !made.includes(n));
    for (const n of entries) if (!(await exists(join(WORKSPACES, n, "workspace.json")))) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}

/** Waits until the made-ahead workspace's VM is ready (it writes no record; its VM paused means it is done). */
async function waitForPaused(id: string | undefined): Promise<void> {
  if (!id) return;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const status = await QmpClient.connect(join(testPaths.runtimeDir, id, "qmp.sock"), Date.now() + 1_000)
      .then(async (qmp) => {
        try {
          return ((await qmp.execute("query-status")) as { status: string }).status;
        } finally {
          qmp.close();
        }
      })
      .catch(() => undefined);
    if (status === "paused") return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a process holding a warm workspace (test/helpers/warm-create-child.ts); resolves once it is ready. */
async function warmHolder(mode: "idle" | "at-write" | "exit") {
  const child = spawn(process.execPath, [join(import.meta.dirname, "helpers", "warm-create-child.js"), mode], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once("exit", (_code, signal) => r(signal)));
  const ready = await new Promise<string[]>((resolve, reject) => {
    child.stdout.on("data", (d) => {
      out += d;
      const line = /^ready (\S+) (\S+)$/m.exec(out);
      if (line) resolve([line[1]!, line[2]!]);
    });
    void exited.then(() => reject(new Error(`the warm holder exited: ${out}${err}`)));
  });
  return { child, exited, id: ready[0]!, dir: ready[1]! };
}

describe("[vm] crash points of the warm workspace", () => {
  it("a pyro that exits normally while it keeps one leaves nothing, with no next command needed", TIMEOUT, async () => {
    const holder = await warmHolder("exit");
    assert.equal(await holder.exited, null);
    const deadline = Date.now() + 5_000;
    while ((await processesMentioning(holder.id)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(await processesMentioning(holder.id), [], "its VM died with it");
    assert.deepEqual(
      (await stateEntries()).filter((n) => n.includes(holder.id)),
      [],
      "its directory and lock are gone",
    );
    assert.equal(await exists(join(testPaths.runtimeDir, holder.id)), false, "and its run directory");
  });

  for (const mode of ["idle", "at-write"] as const) {
    const when = mode === "idle" ? "while it waits" : "after taking it for a create, before the record is written";
    it(`a pyro killed ${when} leaves no orphan VM or files: the next command repairs`, TIMEOUT, async () => {
      const holder = await warmHolder(mode);
      const vms = await processesMentioning(holder.id);
      assert.equal(vms.length, 1, "the warm workspace's VM runs");
      if (mode === "idle") holder.child.kill("SIGKILL");
      assert.equal(await holder.exited, "SIGKILL");
      // The VM outlives its pyro (workspace VMs are detached) until the next command.
      assert.deepEqual(await processesMentioning(holder.id), vms);
      assert.equal(await exists(join(holder.dir, "workspace.json")), false, "no record was written");
      const next = new Pyro();
      assert.equal(
        (await next.listWorkspaces()).workspaces.find((w) => w.workspace_id === holder.id),
        undefined,
      );
      assert.deepEqual(await processesMentioning(holder.id), [], "the next command stopped its VM");
      assert.deepEqual(
        (await stateEntries()).filter((n) => n.includes(holder.id)),
        [],
        "and removed its directory (disks included) and lock",
      );
      assert.equal(await exists(join(testPaths.runtimeDir, holder.id)), false, "and its run directory");
    });
  }
});
