/**
 * Crash points: runs the CLI for each multi-step workspace operation, SIGKILLs it at a seeded
 * random delay inside the operation, then checks that the next pyro command finds (and leaves)
 * state it reads truthfully. PYRO_CRASH_SEED replays a run; the seed and every delay are printed.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { QmpClient } from "../src/runtime/qemu/qmp-client.js";
import { Pyro } from "../src/sdk/pyro.js";
import { forkMemoryFiles } from "./helpers/fork-memory-files.js";
import { CLI, testPaths } from "./helpers/vm-fixtures.js";

const SEED = Number(process.env.PYRO_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const pyro = new Pyro();
const WORKSPACES = join(testPaths.stateDir, "workspaces");
/** The next command after a crash must not wait out a dead holder's lock (the old lock waited ~20 s). */
const PROMPT_MS = 12_000;

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(SEED);

function cli(args: string[], timeout = 180_000) {
  const started = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started };
}

function cliJson(args: string[]) {
  const r = cli([...args, "--json"]);
  assert.equal(r.code, 0, `pyro ${args.join(" ")} failed: ${r.stderr}${r.stdout}`);
  return { value: JSON.parse(r.stdout), ms: r.ms };
}

/** Runs `pyro args…` and SIGKILLs it after `delayMs`; says whether it was still running then. */
async function killDuring(args: string[], delayMs: number): Promise<{ landed: boolean; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const early = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), delayMs))]);
  if (!early) child.kill("SIGKILL");
  await exited;
  return { landed: !early, stderr };
}

/** QEMU processes (not pyro or helper tools) whose command line names this test's PYRO_HOME. */
async function qemuProcesses(): Promise<Map<number, string>> {
  const found = new Map<number, string>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (basename(cmdline.split("\0")[0] ?? "").startsWith("qemu-system") && cmdline.includes(process.env.PYRO_HOME!)) found.set(Number(entry), cmdline);
  }
  return found;
}

function chainOpens(disk: string): void {
  const r = spawnSync("qemu-img", ["info", "--backing-chain", "-U", "--output=json", disk], { encoding: "utf8" });
  assert.equal(r.status, 0, `${disk} does not open: ${r.stderr}`);
}

async function qmpStatus(runDir: string): Promise<string> {
  const qmp = await QmpClient.connect(join(runDir, "qmp.sock"), Date.now() + 10_000);
  try {
    return ((await qmp.execute("query-status")) as { status: string }).status;
  } finally {
    qmp.close();
  }
}

interface Listed {
  workspace_id: string;
  state: "running" | "stopped";
  snapshots: string[];
  vm: { pid: number } | null;
  recovery: string | null;
}

/** Files a workspace must hold: written and reported done before a kill. */
const expected = new Map<string, Map<string, string>>();

async function writeMarker(id: string, label: string): Promise<void> {
  const name = `done-${label}.txt`;
  const token = randomBytes(6).toString("hex");
  const r = cli(["workspace", "exec", id, "--json", "--", "sh", "-c", `echo ${token} > ${name}`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).exit_code, 0);
  if (!expected.has(id)) expected.set(id, new Map());
  expected.get(id)!.set(name, `${token}\n`);
}

async function filesIn(id: string): Promise<Map<string, string>> {
  const r = cli([
    "workspace",
    "exec",
    id,
    "--json",
    "--",
    "sh",
    "-c",
    'for f in done-*.txt; do [ -e "$f" ] && printf \'%s %s\\n\' "$f" "$(cat "$f")"; done; true',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = new Map<string, string>();
  for (const line of (JSON.parse(r.stdout).stdout as string).split("\n").filter(Boolean)) {
    const [name, token] = line.split(" ");
    out.set(name!, `${token}\n`);
  }
  return out;
}

/**
 * The invariants after a crash, checked through fresh pyro processes. `next` is the first command
 * after the kill (timed: a dead holder's lock must not make it wait).
 */
async function checkInvariants(label: string, next: string[]): Promise<Listed[]> {
  const first = cli(next);
  assert.ok(first.ms < PROMPT_MS, `${label}: the next command (pyro ${next.join(" ")}) took ${first.ms} ms`);
  const { value } = cliJson(["workspace", "list"]);
  const listed = value.workspaces as Listed[];
  const owned = new Set<number>();
  const vms = await qemuProcesses();
  for (const ws of listed) {
    const runDir = join(testPaths.runtimeDir, ws.workspace_id);
    const running = [...vms].filter(([, cmd]) => cmd.includes(`${runDir}/`)).map(([pid]) => pid);
    // Truthful state: running exactly when its recorded VM runs.
    if (ws.state === "running") {
      assert.deepEqual(running, [ws.vm!.pid], `${label}: ${ws.workspace_id} says running (pid ${ws.vm!.pid}); VMs in its run dir: ${running}`);
      owned.add(ws.vm!.pid);
      assert.equal(await qmpStatus(runDir), "running", `${label}: ${ws.workspace_id}'s VM is left paused`);
    } else {
      assert.deepEqual(running, [], `${label}: ${ws.workspace_id} says stopped but VMs run in its run dir`);
    }
    const dir = join(WORKSPACES, ws.workspace_id);
    chainOpens(join(dir, "disk.qcow2"));
    // A baseline that is the boot template has no directory of its own: the template's disk must open instead.
    const record = JSON.parse(await readFile(join(dir, "workspace.json"), "utf8")) as { snapshots: { name: string; template?: string }[] };
    assert.deepEqual(
      record.snapshots.map((s) => s.name),
      ws.snapshots,
      `${label}: listed snapshots of ${ws.workspace_id} differ from its record`,
    );
    const saved = record.snapshots.filter((s) => !s.template).map((s) => s.name);
    for (const snap of saved) chainOpens(join(dir, "snapshots", snap, "disk.qcow2"));
    for (const s of record.snapshots) if (s.template) chainOpens(join(testPaths.cacheDir, "templates", s.template, "disk.qcow2"));
    assert.deepEqual(
      (await readdir(join(dir, "snapshots")).catch(() => [] as string[])).sort(),
      [...saved].sort(),
      `${label}: snapshot dirs of ${ws.workspace_id} differ from its record`,
    );
    const scratch = (await readdir(dir)).filter((n) => /\.tmp$|\.partial$|^\.disk-|^\.fork-/.test(n));
    assert.deepEqual(scratch, [], `${label}: temp files left in ${dir}`);
  }
  const unowned = [...vms.keys()].filter((pid) => !owned.has(pid));
  assert.deepEqual(
    unowned,
    [],
    `${label}: QEMU processes no record owns: ${unowned.map((p) =>
      vms
        .get(p)
        ?.split("\0")
        .find((a) => a.includes("agent.sock")),
    )}`,
  );
  // A fork's RAM file lives exactly as long as a VM maps it: none left behind on the memory filesystem.
  for (const file of await forkMemoryFilesHere()) {
    assert.ok(
      [...vms.values()].some((cmd) => cmd.includes(`mem-path=${file},`)),
      `${label}: the fork RAM file ${file} is left on tmpfs with no VM mapping it`,
    );
  }
  const ids = new Set(listed.map((w) => w.workspace_id));
  const rootLeftovers = (await readdir(WORKSPACES)).filter((n) => !ids.has(n));
  assert.deepEqual(rootLeftovers, [], `${label}: unlisted entries in the state dir (half-created workspaces, stale locks, deletions)`);
  return listed;
}

const forkMemoryFilesHere = () => forkMemoryFiles(testPaths);

/** A listed workspace's files written before the kill are all there, and the guest has no staging left. */
async function checkFiles(label: string, id: string): Promise<void> {
  const ws = (cliJson(["workspace", "list"]).value.workspaces as Listed[]).find((w) => w.workspace_id === id)!;
  if (ws.state === "stopped") cliJson(["workspace", "start", id]);
  const have = await filesIn(id);
  for (const [name, content] of expected.get(id) ?? []) assert.equal(have.get(name), content, `${label}: ${name}, reported done before the kill, is lost`);
  const staging = cli(["workspace", "exec", id, "--json", "--", "sh", "-c", "ls -a /var/tmp /tmp | grep pyro-upload || true"]);
  assert.equal(JSON.parse(staging.stdout).stdout, "", `${label}: upload staging files left in the guest`);
}

describe("[vm] crash points: kill -9 of pyro at random points leaves state the next command reads truthfully", { timeout: 900_000 }, () => {
  let main: string;
  let bulk: string;
  let startupMs = 0;
  const log: string[] = [];

  before(async () => {
    console.log(`crash-points seed ${SEED} (replay with PYRO_CRASH_SEED=${SEED})`);
    main = (await pyro.createWorkspace("debian:12")).workspace_id;
    await writeMarker(main, "initial");
    startupMs = cli(["workspace", "status", main, "--json"]).ms;
    log.push(`CLI start-up + status: ${startupMs} ms`);
    bulk = await mkdtemp(join(tmpdir(), "pyro-crash-push-"));
    // Incompressible, so the upload takes long enough to be killed inside.
    await writeFile(join(bulk, "blob.bin"), randomBytes(32 * 1024 * 1024));
  });
  after(async () => {
    console.log(log.join("\n"));
    for (const w of (await pyro.listWorkspaces()).workspaces) await pyro.deleteWorkspace(w.workspace_id).catch(() => undefined);
    await rm(bulk, { recursive: true, force: true });
    assert.deepEqual([...(await qemuProcesses()).keys()], [], "VMs outlived the test");
  });

  /** Kills `pyro args` at startup + a seeded share of `spanMs`, and logs where. */
  async function crash(label: string, args: string[], spanMs: number): Promise<void> {
    // Past the CLI's own start-up (node, module loading, recovery sweep), then somewhere inside the operation.
    const delay = Math.round(startupMs + random() * spanMs);
    const { landed } = await killDuring(args, delay);
    log.push(`${label}: killed at ${delay} ms${landed ? "" : " (it had already finished)"}`);
  }

  it("create", async () => {
    await crash("create", ["workspace", "create", "debian:12", "--json"], 5_000);
    const listed = await checkInvariants("create", ["workspace", "list", "--json"]);
    // A create that finished is a whole workspace; one that did not is gone, secrets and all.
    for (const ws of listed.filter((w) => w.workspace_id !== main)) await pyro.deleteWorkspace(ws.workspace_id);
  });

  it("exec", async () => {
    await writeMarker(main, "before-exec");
    await crash("exec", ["workspace", "exec", main, "--", "sh", "-c", "sleep 20"], 2_500);
    await checkInvariants("exec", ["workspace", "exec", main, "--", "true"]);
    await checkFiles("exec", main);
  });

  it("sync push", async () => {
    await writeMarker(main, "before-push");
    await crash("sync push", ["workspace", "sync", "push", main, bulk, "--dest", "bulk"], 4_000);
    await checkInvariants("sync push", ["workspace", "exec", main, "--", "true"]);
    await checkFiles("sync push", main);
  });

  it("snapshot create", async () => {
    await writeMarker(main, "before-snapshot");
    await crash("snapshot create", ["workspace", "snapshot", "create", main, "crashed"], 3_000);
    await checkInvariants("snapshot create", ["workspace", "status", main, "--json"]);
    await checkFiles("snapshot create", main);
  });

  it("snapshot create killed while the VM is paused for the save", async () => {
    await writeMarker(main, "before-paused");
    const state = join(WORKSPACES, main, "snapshots", "paused", "state.bin");
    const child = spawn(process.execPath, [CLI, "workspace", "snapshot", "create", main, "paused"], { stdio: "ignore" });
    const exited = new Promise((r) => child.once("exit", r));
    let landed = false;
    for (const deadline = Date.now() + 120_000; Date.now() < deadline && child.exitCode === null; ) {
      if (
        await stat(state).then(
          () => true,
          () => false,
        )
      ) {
        child.kill("SIGKILL");
        landed = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await exited;
    log.push(`snapshot create (targeted): ${landed ? "killed once the state file appeared" : "finished before the state file was seen"}`);
    assert.ok(landed, "the snapshot finished before its state file was seen; the crash point was missed");
    const paused = await qmpStatus(join(testPaths.runtimeDir, main));
    log.push(`snapshot create (targeted): VM status right after the kill: ${paused}`);
    await checkInvariants("snapshot create (targeted)", ["workspace", "status", main, "--json"]);
    await checkFiles("snapshot create (targeted)", main);
  });

  it("snapshot delete", async () => {
    await pyro.createSnapshot(main, "doomed");
    await writeMarker(main, "before-snapshot-delete");
    await crash("snapshot delete", ["workspace", "snapshot", "delete", main, "doomed"], 500);
    await checkInvariants("snapshot delete", ["workspace", "snapshot", "list", main, "--json"]);
    await checkFiles("snapshot delete", main);
  });

  it("reset, then delete of the snapshot the reset disk may now need", async () => {
    await pyro.createSnapshot(main, "keep");
    const atSnapshot = new Map(expected.get(main));
    await writeMarker(main, "after-keep");
    await crash("reset", ["workspace", "reset", main, "--snapshot", "keep"], 1_500);
    await checkInvariants("reset", ["workspace", "status", main, "--json"]);
    // Interrupted, the reset either did not reach the disk (all files kept) or did (the snapshot's files).
    const listed = (cliJson(["workspace", "list"]).value.workspaces as Listed[]).find((w) => w.workspace_id === main)!;
    if (listed.state === "stopped") cliJson(["workspace", "start", main]);
    const have = await filesIn(main);
    const full = new Map(expected.get(main));
    const matches = (want: Map<string, string>) => want.size === have.size && [...want].every(([k, v]) => have.get(k) === v);
    assert.ok(matches(full) || matches(atSnapshot), `reset: files are neither the state before the reset nor the snapshot's: ${[...have.keys()]}`);
    expected.set(main, new Map(have));
    // The old record kept the pre-reset backing: deleting 'keep' must not break the live disk.
    const del = cli(["workspace", "snapshot", "delete", main, "keep", "--json"]);
    log.push(`reset: deleting 'keep' afterwards ${del.code === 0 ? "succeeded" : `was refused: ${(del.stderr + del.stdout).trim()}`}`);
    // A disk the reset layered on 'keep' reads through it: deleting it then must be refused.
    if (matches(atSnapshot)) assert.notEqual(del.code, 0, "reset: 'keep' was deleted while the live disk is layered on it");
    await checkInvariants("reset + snapshot delete", ["workspace", "list", "--json"]);
    await checkFiles("reset + snapshot delete", main);
  });

  it("reset killed the moment its new VM runs, before the record names it (the reported case)", async () => {
    await pyro.createSnapshot(main, "pivot");
    const atSnapshot = new Map(expected.get(main));
    await writeMarker(main, "after-pivot");
    const runDir = join(testPaths.runtimeDir, main);
    const previous = (await pyro.statusWorkspace(main)).vm?.pid;
    const child = spawn(process.execPath, [CLI, "workspace", "reset", main, "--snapshot", "pivot"], { stdio: "ignore" });
    const exited = new Promise((r) => child.once("exit", r));
    let landed = false;
    for (const deadline = Date.now() + 120_000; Date.now() < deadline && child.exitCode === null; ) {
      if ([...(await qemuProcesses())].some(([pid, cmd]) => pid !== previous && cmd.includes(`${runDir}/`))) {
        child.kill("SIGKILL");
        landed = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await exited;
    log.push(`reset (targeted): ${landed ? "killed as its new VM started" : "finished before its new VM was seen"}`);
    assert.ok(landed, "the reset finished before its new VM was seen; the crash point was missed");
    await checkInvariants("reset (targeted)", ["workspace", "status", main, "--json"]);
    // The live disk now reads through 'pivot' whatever the record said before: deleting it must be refused.
    const del = cli(["workspace", "snapshot", "delete", main, "pivot", "--json"]);
    assert.notEqual(del.code, 0, "'pivot' was deleted while the live disk is layered on it");
    await checkInvariants("reset (targeted) + snapshot delete", ["workspace", "list", "--json"]);
    const listed = (cliJson(["workspace", "list"]).value.workspaces as Listed[]).find((w) => w.workspace_id === main)!;
    assert.match(listed.recovery ?? "", /interrupted 'reset'/);
    if (listed.state === "stopped") cliJson(["workspace", "start", main]);
    const have = await filesIn(main);
    assert.deepEqual(
      new Map([...have].sort()),
      new Map([...atSnapshot].sort()),
      "after an interrupted reset that reached the disk, the files are the snapshot's",
    );
    expected.set(main, new Map(have));
    await checkFiles("reset (targeted)", main);
  });

  it("stop", async () => {
    await writeMarker(main, "before-stop");
    await crash("stop", ["workspace", "stop", main], 2_000);
    await checkInvariants("stop", ["workspace", "status", main, "--json"]);
    await checkFiles("stop", main);
  });

  it("start", async () => {
    await writeMarker(main, "before-start");
    await pyro.stopWorkspace(main);
    await crash("start", ["workspace", "start", main], 2_500);
    await checkInvariants("start", ["workspace", "status", main, "--json"]);
    await checkFiles("start", main);
  });

  /** Deletes every workspace but `main` (copies a fork left). */
  async function dropOthers(): Promise<void> {
    for (const w of (await pyro.listWorkspaces()).workspaces) if (w.workspace_id !== main) await pyro.deleteWorkspace(w.workspace_id);
  }

  it("fork", async () => {
    await writeMarker(main, "before-fork");
    await crash("fork", ["workspace", "fork", main, "--count", "2"], 4_000);
    const listed = await checkInvariants("fork", ["workspace", "status", main, "--json"]);
    // A copy that is listed is whole: it has the source's files.
    for (const ws of listed.filter((w) => w.workspace_id !== main)) await checkFiles(`fork copy ${ws.workspace_id}`, ws.workspace_id).catch(() => undefined);
    await checkFiles("fork", main);
    await dropOthers();
  });

  for (const [point, seen] of [
    ["while the source is paused and its RAM file is being written", async () => (await forkMemoryFilesHere()).length > 0],
    [
      "the moment a copy's VM runs, before its record is written",
      async () => [...(await qemuProcesses()).values()].some((cmd) => cmd.includes("mem-path=") && cmd.includes("/fork-")),
    ],
  ] as const) {
    it(`fork killed ${point}`, async () => {
      // A source whose RAM is a mapped file (restored from the template): only its fork writes a RAM
      // file and maps it. main was cold-booted by 'start' above, so its fork streams memory instead.
      const source = await pyro.createWorkspace("debian:12");
      assert.equal(source.vm?.start_mode, "template_restore", "the fork source must map its memory from the template");
      await writeMarker(source.workspace_id, `before-fork-${point.length}`);
      const child = spawn(process.execPath, [CLI, "workspace", "fork", source.workspace_id], { stdio: "ignore" });
      const exited = new Promise((r) => child.once("exit", r));
      let landed = false;
      for (const deadline = Date.now() + 120_000; Date.now() < deadline && child.exitCode === null; ) {
        if (await seen()) {
          child.kill("SIGKILL");
          landed = true;
          break;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      await exited;
      log.push(`fork (${point}): ${landed ? "killed there" : "finished before that point was seen"}`);
      assert.ok(landed, `the fork finished before the crash point (${point}) was seen`);
      await checkInvariants(`fork (${point})`, ["workspace", "status", source.workspace_id, "--json"]);
      await checkFiles(`fork (${point})`, source.workspace_id);
      await dropOthers();
      assert.deepEqual(await forkMemoryFilesHere(), [], "a fork RAM file outlived every VM");
    });
  }

  it("export (the disk's top layer copied while /workspace is frozen)", async () => {
    await writeMarker(main, "before-export");
    const out = join(await mkdtemp(join(tmpdir(), "pyro-crash-export-")), "out.tar");
    await crash("export", ["workspace", "export", main, ".", "--output", out], 1_500);
    await checkInvariants("export", ["workspace", "exec", main, "--", "sh", "-c", "echo again > /workspace/after-export"]);
    await checkFiles("export", main);
    await rm(join(out, ".."), { recursive: true, force: true });
  });

  it("a host killed while it holds /workspace frozen leaves a guest that writes again", async () => {
    const ws = (cliJson(["workspace", "list"]).value.workspaces as Listed[]).find((w) => w.workspace_id === main)!;
    if (ws.state === "stopped") cliJson(["workspace", "start", main]);
    await writeMarker(main, "before-freeze");
    // A pyro process whose agent connection holds the freeze (as export and diff do while they copy), SIGKILLed there.
    const agentClient = join(import.meta.dirname, "..", "src", "guest-protocol", "agent-client.js");
    const socket = join(testPaths.runtimeDir, main, "agent.sock");
    const holder = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { AgentClient } = await import(${JSON.stringify(agentClient)});
         const agent = await AgentClient.connect(${JSON.stringify(socket)}, Date.now() + 10000);
         await agent.waitReady(Date.now() + 20000);
         await agent.freezeWorkspace();
         console.log("frozen");
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise((r) => holder.once("exit", r));
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on("data", (d: Buffer) => d.toString().includes("frozen") && resolve());
      holder.once("exit", () => reject(new Error("the freezing process ended before it froze /workspace")));
    });
    holder.kill("SIGKILL");
    await exited;
    // The first command after the kill writes to /workspace, well inside the agent's own cap (10 s):
    // the closed connection (or this host's hello) thawed it.
    const again = cli(["workspace", "exec", main, "--json", "--", "sh", "-c", "echo again > /workspace/after-freeze && cat /workspace/after-freeze"]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).stdout, "again\n");
    assert.ok(again.ms < 5_000, `a write to /workspace took ${again.ms} ms after the freezing host died`);
    await checkInvariants("freeze holder", ["workspace", "status", main, "--json"]);
    await checkFiles("freeze holder", main);
  });

  it("delete", async () => {
    const doomed = (await pyro.createWorkspace("debian:12")).workspace_id;
    await crash("delete", ["workspace", "delete", doomed], 500);
    const listed = await checkInvariants("delete", ["workspace", "list", "--json"]);
    if (listed.some((w) => w.workspace_id === doomed)) await pyro.deleteWorkspace(doomed);
    await checkFiles("delete", main);
  });
});
