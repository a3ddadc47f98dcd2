import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { CLI } from "./helpers/vm-fixtures.js";
import { connectStdio, toolText } from "./helpers/mcp-client.js";

// The public contract's argument names and commands, checked without booting anything: every call
// here fails (or answers) before a VM would start.

function pyro(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000, ...(input !== undefined ? { input } : {}) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("CLI: demo, prepare, doctor --environment, contract flags", () => {
  it("lists demo and prepare, with the contract's options", () => {
    const help = pyro(["--help"]);
    for (const cmd of ["demo", "prepare"]) assert.match(help.stdout, new RegExp(`^  ${cmd}\\b`, "m"));
    assert.match(pyro(["demo", "--help"]).stdout, /--network[\s\S]*--json/);
    assert.match(pyro(["prepare", "--help"]).stdout, /\[environment\][\s\S]*--network[\s\S]*--force[\s\S]*--json/);
    assert.match(pyro(["doctor", "--help"]).stdout, /--environment <name>/);
  });

  it("refuses bad usage of demo and prepare with exit 2", () => {
    for (const args of [
      ["demo", "debian:12"],
      ["demo", "--force"],
      ["prepare", "debian:12", "extra"],
      ["prepare", "--bogus"],
      ["doctor", "--environment"],
    ]) {
      const r = pyro(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^error: /, args.join(" "));
    }
  });

  it("prepare and doctor --environment name an unknown environment before touching anything", () => {
    const prepared = pyro(["prepare", "debian:99", "--json"]);
    assert.equal(prepared.code, 125);
    assert.equal(JSON.parse(prepared.stdout).error.code, "ENVIRONMENT_UNKNOWN");
    const doctor = pyro(["doctor", "--environment", "debian:99", "--json"]);
    assert.equal(doctor.code, 125);
    assert.equal(JSON.parse(doctor.stdout).error.code, "ENVIRONMENT_UNKNOWN");
  });

  it("doctor --environment reports warm / cold / stale per piece, network on request", () => {
    const r = pyro(["doctor", "--environment", "debian:12", "--network", "--json"]);
    const report = JSON.parse(r.stdout) as { daily_loop: { environment: string; warm: boolean; pieces: Record<string, { state: string; detail: string }> } };
    assert.equal(report.daily_loop.environment, "debian:12");
    assert.deepEqual(Object.keys(report.daily_loop.pieces).sort(), ["environment", "initramfs", "kernel", "network", "template"]);
    for (const [piece, { state, detail }] of Object.entries(report.daily_loop.pieces)) {
      assert.match(state, /^(warm|cold|stale)$/, piece);
      assert.ok(detail.length > 0, piece);
    }
    assert.equal(
      report.daily_loop.warm,
      Object.values(report.daily_loop.pieces).every((p) => p.state === "warm"),
    );
    const human = pyro(["doctor", "--environment", "debian:12"]);
    assert.match(human.stdout, /^Daily loop \(debian:12\): (warm|not warm)\n {2}environment: (warm|cold|stale) \(/m);
  });

  it("workspace file write --text-file and patch apply --patch-file read a host file or stdin ('-')", () => {
    // The content is read first, then the (missing) workspace is looked up: the flag is wired and '-' does not hang.
    for (const [args, input] of [
      [["workspace", "file", "write", "no-such-ws", "a.txt", "--text-file", "-", "--json"], "hello\n"],
      [["workspace", "patch", "apply", "no-such-ws", "--patch-file", "-", "--json"], "--- a/a.txt\n+++ b/a.txt\n@@ -0,0 +1 @@\n+hello\n"],
    ] as const) {
      const r = pyro([...args], input);
      assert.equal(r.code, 125, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout).error.code, "WORKSPACE_NOT_FOUND", args.join(" "));
    }
    for (const [args, flag] of [
      [["workspace", "file", "write", "W", "a.txt", "--text-file", "/no/such/file"], "--text-file"],
      [["workspace", "patch", "apply", "W", "--patch-file", "/no/such/file"], "--patch-file"],
    ] as const) {
      const r = pyro([...args]);
      assert.equal(r.code, 125);
      assert.match(r.stderr, new RegExp(`cannot read ${flag} /no/such/file: no such file`));
    }
  });
});

describe("MCP: the contract's argument names", () => {
  it("vm_run takes vcpu_count, mem_mib, ttl_seconds and allow_host_compat, checked by the run itself", async () => {
    const { client } = await connectStdio(["--profile", "vm-run"]);
    try {
      const schema = (await client.listTools()).tools.find((t) => t.name === "vm_run")!.inputSchema.properties as Record<string, unknown>;
      for (const key of ["vcpu_count", "mem_mib", "ttl_seconds", "allow_host_compat", "timeout_seconds", "network"]) assert.ok(key in schema, key);
      // Out-of-range shapes are refused by the one-shot run's own bounds, before anything boots.
      const cpus = await client.callTool({ name: "vm_run", arguments: { command: "nproc", vcpu_count: 99 } });
      assert.equal(cpus.isError, true);
      assert.match(toolText(cpus), /^INVALID_ARGUMENT: vcpu count must be an integer between 1 and \d+, got 99/);
      const memory = await client.callTool({ name: "vm_run", arguments: { command: "true", mem_mib: 1 } });
      assert.match(toolText(memory), /^INVALID_ARGUMENT: memory \(MiB\) must be an integer between \d+ and \d+, got 1/);
      // Accepted (not an unknown key): the unknown environment is what fails.
      const accepted = await client.callTool({
        name: "vm_run",
        arguments: { command: "true", environment: "debian:99", vcpu_count: 2, mem_mib: 512, ttl_seconds: 60, allow_host_compat: false },
      });
      assert.equal(accepted.isError, true);
      assert.match(toolText(accepted), /^ENVIRONMENT_UNKNOWN: /);
      const badTtl = await client.callTool({ name: "vm_run", arguments: { command: "true", ttl_seconds: -1 } });
      assert.equal(badTtl.isError, true);
    } finally {
      await client.close();
    }
  });

  it("snapshot_create and snapshot_delete take snapshot_name (and still name), exactly one", async () => {
    const { client } = await connectStdio(["--profile", "workspace-full"]);
    try {
      for (const tool of ["snapshot_create", "snapshot_delete"]) {
        const byContract = await client.callTool({ name: tool, arguments: { workspace_id: "no-such-ws", snapshot_name: "checkpoint" } });
        assert.match(toolText(byContract), /^WORKSPACE_NOT_FOUND: /, tool);
        const byOldName = await client.callTool({ name: tool, arguments: { workspace_id: "no-such-ws", name: "checkpoint" } });
        assert.match(toolText(byOldName), /^WORKSPACE_NOT_FOUND: /, tool);
        for (const args of [{ workspace_id: "w" }, { workspace_id: "w", name: "a", snapshot_name: "b" }]) {
          const r = await client.callTool({ name: tool, arguments: args });
          assert.equal(r.isError, true, tool);
          assert.match(toolText(r), /^INVALID_ARGUMENT: give the snapshot's name as snapshot_name/, tool);
        }
      }
    } finally {
      await client.close();
    }
  });

  it("workspace_create's machine shape is checked by createWorkspace's own bounds", async () => {
    const { client } = await connectStdio(["--profile", "workspace-full"]);
    try {
      const r = await client.callTool({ name: "workspace_create", arguments: { environment: "debian:12", vcpu_count: 99 } });
      assert.equal(r.isError, true);
      assert.match(toolText(r), /^INVALID_ARGUMENT: .*vcpu/i);
    } finally {
      await client.close();
    }
  });
});

describe("daily-loop readiness and demo, without booting", () => {
  it("reads cold and stale pieces from what is on disk, and changes nothing", async () => {
    const { mkdtemp, mkdir, writeFile, symlink, readdir, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { Pyro } = await import("../src/sdk/pyro.js");
    const { sharedCacheDir } = await import("./helpers/vm-fixtures.js");
    const { locateAgent } = await import("../src/guest-agent/agent-binary.js");
    const home = await mkdtemp(join(tmpdir(), "pyro-ready-"));
    try {
      await mkdir(join(home, "cache", "initramfs"), { recursive: true });
      await mkdir(join(home, "cache", "templates", "debian_12-1c-1024m-0123456789abcdef"), { recursive: true });
      await symlink(join(sharedCacheDir, "kernels"), join(home, "cache", "kernels"));
      await writeFile(join(home, "cache", "initramfs", "0000000000000000.cpio"), "an older build");
      const before = await readdir(join(home, "cache"), { recursive: true });
      const r = await new Pyro({ home }).dailyLoopReadiness("debian:12", { network: true });
      assert.equal(r.pieces.environment.state, "cold");
      assert.equal(r.pieces.kernel.state, "warm");
      assert.equal(r.pieces.initramfs.state, (await locateAgent()) ? "stale" : "cold");
      assert.equal(r.pieces.template.state, "stale");
      assert.ok(r.pieces.network);
      assert.equal(r.warm, false);
      assert.deepEqual(await readdir(join(home, "cache"), { recursive: true }), before, "readiness wrote nothing");
      const empty = await new Pyro({ home: join(home, "empty") }).dailyLoopReadiness("debian:12");
      assert.deepEqual(
        Object.values(empty.pieces).map((p) => p.state),
        ["cold", "cold", "cold", "cold"],
      );
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("demo reports a failed create without leaving anything, and says why", async () => {
    const { Pyro } = await import("../src/sdk/pyro.js");
    const demo = await new Pyro().demo("debian:99");
    assert.equal(demo.ok, false);
    assert.equal(demo.workspace_id, null);
    assert.deepEqual(
      demo.steps.map((s) => [s.step, s.ok]),
      [["create", false]],
    );
    assert.match(demo.error ?? "", /debian:99/);
  });
});
