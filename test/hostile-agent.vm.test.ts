/**
 * The guest is the attacker: a real workspace VM whose PID 1 is the hostile test agent
 * (guest/agent/src/bin/hostile-agent.rs). It serves honestly until the test arms one mode for one
 * op, then answers that request with forged frames. Every operation family pyro performs must then
 * fail with one GUEST_PROTOCOL_ERROR naming the workspace, within its time bound, with pyro's RSS
 * under 256 MB and nothing written on the host outside pyro's own directories.
 */
import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { AGENT_TARGET, agentSourceDir } from "../src/guest-agent/agent-binary.js";
import { FRAME_STALL_MS } from "../src/guest-protocol/agent-client.js";
import { resolvePaths } from "../src/paths.js";
import { findExecutable, runHostCommand } from "../src/process/host-command.js";
import { buildGuestRuntime, type GuestRuntime } from "../src/runtime/guest-runtime.js";
import { WorkspaceContext, withRunningWorkspace } from "../src/workspaces/workspace-context.js";
import { execInWorkspace } from "../src/workspaces/workspace-exec.js";
import { listWorkspaceFiles, readWorkspaceFile } from "../src/workspaces/workspace-files.js";
import { createWorkspace, deleteWorkspace, listWorkspaces } from "../src/workspaces/workspace-lifecycle.js";
import { listServices, serviceLogs, serviceStatus, startService } from "../src/workspaces/workspace-services.js";
import { openShell, readShell } from "../src/workspaces/workspace-shells.js";
import { exportFromWorkspace } from "../src/workspaces/workspace-export.js";
import { diffWorkspace } from "../src/workspaces/workspace-tree.js";
import { sharedCacheDir } from "./helpers/vm-fixtures.js";

const RSS_LIMIT = 256 * 1024 * 1024;
/** An op that is not waiting out a stalled frame answers (or fails) well within this. */
const QUICK_MS = 8_000;
const HOSTILE_AGENT = join(agentSourceDir(), "target", AGENT_TARGET, "release", "hostile-agent");

/** Runs `fn`, sampling this process's RSS; returns its outcome, duration and peak RSS. */
async function measured(fn: () => Promise<unknown>): Promise<{ error: unknown; ms: number; peakRss: number }> {
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 5);
  const started = Date.now();
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  } finally {
    clearInterval(sampler);
  }
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  return { error, ms: Date.now() - started, peakRss };
}

/** Every file and directory under `dir`, relative, sorted. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.map(String).sort();
}

describe("[vm] the guest is the attacker: pyro against a hostile agent", { timeout: 900_000 }, () => {
  let home: string;
  let canary: string;
  let canaryBefore: string[];
  let ctx: WorkspaceContext;
  let id: string;
  let shellId: string;
  const peaks: string[] = [];

  before(async () => {
    const cargo = findExecutable("cargo") ?? join(process.env.HOME ?? "/root", ".cargo", "bin", "cargo");
    await runHostCommand(cargo, ["build", "--release", "--quiet", "--features", "hostile-test-agent", "--bin", "hostile-agent"], {
      cwd: agentSourceDir(),
      timeoutMs: 600_000,
    });
    // Own initramfs and boot-template dirs: the hostile agent never lands in the shared cache.
    home = await mkdtemp(join(tmpdir(), "pyro-hostile-"));
    await mkdir(join(home, "cache", "initramfs"), { recursive: true });
    for (const dir of ["kernels", "environments"]) await symlink(join(sharedCacheDir, dir), join(home, "cache", dir));
    await copyFile(join(sharedCacheDir, "accel-probe.json"), join(home, "cache", "accel-probe.json")).catch(() => undefined);
    const paths = resolvePaths({ PYRO_HOME: home });
    const runtime: Promise<GuestRuntime> = buildGuestRuntime(paths, { agentPath: HOSTILE_AGENT });
    ctx = new WorkspaceContext(paths, undefined, () => runtime);

    canary = await mkdtemp(join(tmpdir(), "pyro-canary-"));
    const seed = join(canary, "seed");
    await mkdir(seed);
    await writeFile(join(seed, "README.md"), "hello\n");
    canaryBefore = await tree(canary);

    const ws = await createWorkspace(ctx, "debian:12", { memMib: 512, seedPath: seed });
    id = ws.workspace_id;
    await startService(ctx, id, "sleeper", ["sh", "-c", "echo up; exec sleep 100000"]);
    shellId = (await openShell(ctx, id)).shell_id;
  });

  after(async () => {
    if (peaks.length) console.log(`peak RSS per case (MiB):\n  ${peaks.join("\n  ")}`);
    // Every workspace of this home, even one whose creation half-failed: no VM outlives the test.
    if (ctx)
      for (const ws of (await listWorkspaces(ctx).catch(() => ({ workspaces: [] }))).workspaces)
        await deleteWorkspace(ctx, ws.workspace_id).catch(() => undefined);
    if (home) await rm(home, { recursive: true, force: true });
    if (canary) await rm(canary, { recursive: true, force: true });
  });

  /** Arms the hostile agent: its next request for `op` (or `*`) is answered in `mode`. */
  async function arm(op: string, mode: string): Promise<void> {
    await withRunningWorkspace(ctx, id, (_record, vm) => vm.agent.writeFile("/run/pyro-hostile/mode", `${op} ${mode}\n`));
  }

  it("serves honestly until armed (the harness works)", async () => {
    const r = await execInWorkspace(ctx, id, ["cat", "README.md"]);
    assert.equal(r.stdout, "hello\n");
    assert.equal((await diffWorkspace(ctx, id)).changed, false);
  });

  const exportTo = () => exportFromWorkspace(ctx, id, ".", join(canary, "out.tar"));

  const cases: { family: string; op: string; mode: string; run: () => Promise<unknown>; reason: RegExp; slow?: true }[] = [
    { family: "hello", op: "hello", mode: "wrong-types", run: () => readWorkspaceFile(ctx, id, "README.md"), reason: /hello reply has the wrong shape/ },
    { family: "exec", op: "exec", mode: "deep-json", run: () => execInWorkspace(ctx, id, ["true"]), reason: /nests deeper than/ },
    { family: "exec", op: "exec", mode: "oversized-payload", run: () => execInWorkspace(ctx, id, ["true"]), reason: /frame length out of bounds/ },
    { family: "exec", op: "exec", mode: "exec-huge", run: () => execInWorkspace(ctx, id, ["true"]), reason: /declares 1099511627776\+0 output bytes/ },
    { family: "exec", op: "exec", mode: "garbage", run: () => execInWorkspace(ctx, id, ["true"]), reason: /malformed frame \(bad magic\)/ },
    { family: "exec", op: "exec", mode: "unknown-id", run: () => execInWorkspace(ctx, id, ["true"]), reason: /which was never sent/ },
    { family: "exec", op: "exec", mode: "reused-id", run: () => execInWorkspace(ctx, id, ["true"]), reason: /already answered/ },
    { family: "exec", op: "exec", mode: "bad-utf8", run: () => execInWorkspace(ctx, id, ["true"]), reason: /not valid UTF-8/ },
    { family: "exec", op: "exec", mode: "impossible-length", run: () => execInWorkspace(ctx, id, ["true"]), reason: /frame length out of bounds/ },
    { family: "exec", op: "exec", mode: "oversized-header", run: () => execInWorkspace(ctx, id, ["true"]), reason: /header \(max 65536\)/ },
    {
      family: "exec",
      op: "exec",
      mode: "truncated",
      run: () => execInWorkspace(ctx, id, ["true"]),
      reason: /stopped sending in the middle of a frame/,
      slow: true,
    },
    {
      family: "file read",
      op: "file.read",
      mode: "oversized-payload",
      run: () => readWorkspaceFile(ctx, id, "README.md"),
      reason: /frame length out of bounds/,
    },
    {
      family: "file read",
      op: "file.read",
      mode: "wrong-types",
      run: () => readWorkspaceFile(ctx, id, "README.md"),
      reason: /file.read reply has the wrong shape/,
    },
    { family: "file list", op: "file.list", mode: "list-million", run: () => listWorkspaceFiles(ctx, id), reason: /frame length out of bounds/ },
    {
      family: "file list",
      op: "file.list",
      mode: "list-escape",
      run: () => listWorkspaceFiles(ctx, id),
      reason: /file.list entry '\/workspace\/\.\.\/\.\.\/etc\/passwd' has '\.' or '\.\.' segments/,
    },
    { family: "file stat", op: "file.stat", mode: "wrong-types", run: exportTo, reason: /file.stat reply has the wrong shape/ },
    // /workspace is its own disk: diff and export read the disk itself on the host (the ext4 reader's
    // own tests corrupt its bytes), asking the guest only to freeze /workspace while its top layer is copied.
    { family: "export freeze", op: "fs.freeze", mode: "wrong-types", run: exportTo, reason: /fs.freeze reply has the wrong shape/ },
    {
      family: "diff freeze",
      op: "fs.freeze",
      mode: "wrong-types",
      run: () => diffWorkspace(ctx, id, { summary: true }),
      reason: /fs.freeze reply has the wrong shape/,
    },
    { family: "diff freeze", op: "fs.freeze", mode: "oversized-payload", run: () => diffWorkspace(ctx, id), reason: /frame length out of bounds/ },
    { family: "logs", op: "file.read", mode: "oversized-payload", run: () => serviceLogs(ctx, id, "sleeper"), reason: /frame length out of bounds/ },
    { family: "shell read", op: "shell.read", mode: "oversized-payload", run: () => readShell(ctx, id, shellId), reason: /frame length out of bounds/ },
    { family: "shell read", op: "shell.read", mode: "wrong-types", run: () => readShell(ctx, id, shellId), reason: /shell.read reply has the wrong shape/ },
    { family: "service list", op: "service.list", mode: "wrong-types", run: () => listServices(ctx, id), reason: /service.list reply has the wrong shape/ },
    {
      family: "service status",
      op: "service.list",
      mode: "oversized-header",
      run: () => serviceStatus(ctx, id, "sleeper"),
      reason: /service.list reply has the wrong shape|header/,
    },
    // Last: the rest of a flood may reach the next connection.
    { family: "exec", op: "exec", mode: "event-flood", run: () => execInWorkspace(ctx, id, ["true"]), reason: /frames nobody asked for/ },
  ];

  for (const c of cases) {
    it(`${c.family}: ${c.op} answered with ${c.mode} → GUEST_PROTOCOL_ERROR`, { timeout: 120_000 }, async () => {
      await arm(c.op, c.mode);
      const { error, ms, peakRss } = await measured(c.run);
      peaks.push(`${(peakRss / 1048576).toFixed(0).padStart(4)}  ${ms.toString().padStart(6)} ms  ${c.family}: ${c.op} ${c.mode}`);
      assert.ok(isPyroError(error, "GUEST_PROTOCOL_ERROR"), `expected GUEST_PROTOCOL_ERROR, got ${error instanceof Error ? error.message : String(error)}`);
      assert.match(error.message, new RegExp(`(workspace ${id}|${id})`));
      assert.match(error.message, c.reason);
      assert.ok(ms < (c.slow ? FRAME_STALL_MS + QUICK_MS : QUICK_MS), `${c.mode} took ${ms} ms`);
      assert.ok(peakRss < RSS_LIMIT, `peak RSS ${peakRss} bytes`);
    });
  }

  // Before a connection's first reply, bytes that are no frame of this connection cannot be told
  // apart from an earlier connection's leftovers (QEMU delivers those late): they are dropped
  // unbuffered, and attach re-sends hello. The guest gains nothing but a short delay.
  for (const mode of ["deep-json", "bad-utf8", "oversized-payload", "unknown-id"]) {
    it(`hello: unparseable or foreign first replies (${mode}) are dropped as leftovers, bounded`, { timeout: 120_000 }, async () => {
      await arm("hello", mode);
      const { error, ms, peakRss } = await measured(() => readWorkspaceFile(ctx, id, "README.md"));
      peaks.push(`${(peakRss / 1048576).toFixed(0).padStart(4)}  ${ms.toString().padStart(6)} ms  hello: hello ${mode} (recovered)`);
      assert.equal(error, undefined);
      assert.ok(ms < QUICK_MS, `took ${ms} ms`);
      assert.ok(peakRss < RSS_LIMIT, `peak RSS ${peakRss} bytes`);
    });
  }

  it("nothing was written on the host outside pyro's directories, and the workspace still answers", async () => {
    assert.deepEqual(await tree(canary), canaryBefore);
    for (const escaped of ["/etc/pyro-pwned", "/tmp/pyro-pwned", resolve("..", "..", "pyro-pwned"), join(canary, "..", "..", "pyro-pwned")]) {
      await assert.rejects(stat(escaped), { code: "ENOENT" }, escaped);
    }
    const r = await execInWorkspace(ctx, id, ["echo", "still here"]);
    assert.equal(r.stdout, "still here\n");
  });
});
