import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { CLI } from "./helpers/vm-fixtures.js";
import { connectStdio, toolJson } from "./helpers/mcp-client.js";

function pyro(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 400_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const TIMEOUT = { timeout: 420_000 };

describe("the public contract's daily loop, on real guests", () => {
  it("pyro demo --json runs create → exec → delete and leaves no workspace behind", TIMEOUT, () => {
    const r = pyro(["demo", "--json"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const demo = JSON.parse(r.stdout) as { ok: boolean; exit_code: number; stdout: string; steps: { step: string; ok: boolean; ms: number }[] };
    assert.equal(demo.ok, true);
    assert.match(demo.stdout, /^git version \d/);
    assert.deepEqual(
      demo.steps.map((s) => [s.step, s.ok]),
      [
        ["create", true],
        ["exec", true],
        ["delete", true],
      ],
    );
    for (const s of demo.steps) assert.ok(s.ms >= 0);
    assert.equal(JSON.parse(pyro(["workspace", "list", "--json"]).stdout).count, 0);
  });

  it("pyro prepare debian:12 --json leaves every piece warm and proves the loop", TIMEOUT, () => {
    const r = pyro(["prepare", "debian:12", "--json"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const prepared = JSON.parse(r.stdout) as {
      after: { warm: boolean; pieces: Record<string, { state: string }> };
      proof: { step: string; ok: boolean }[];
      actions: string[];
    };
    assert.deepEqual(Object.fromEntries(Object.entries(prepared.after.pieces).map(([k, v]) => [k, v.state])), {
      environment: "warm",
      kernel: "warm",
      initramfs: "warm",
      template: "warm",
    });
    assert.equal(prepared.after.warm, true);
    assert.deepEqual(
      prepared.proof.map((s) => [s.step, s.ok]),
      [
        ["create", true],
        ["exec", true],
        ["reset", true],
        ["delete", true],
      ],
    );
    assert.ok(prepared.actions.length > 0);
    // doctor reads the same readiness without changing anything.
    const doctor = JSON.parse(pyro(["doctor", "--environment", "debian:12", "--json"]).stdout) as { daily_loop: { warm: boolean } };
    assert.equal(doctor.daily_loop.warm, true);
    assert.equal(JSON.parse(pyro(["workspace", "list", "--json"]).stdout).count, 0);
  });

  it("vm_run {vcpu_count: 2} boots a guest with two CPUs", TIMEOUT, async () => {
    const { client } = await connectStdio(["--profile", "vm-run"]);
    try {
      const r = toolJson<{ exit_code: number; stdout: string; vcpu_count: number }>(
        await client.callTool({ name: "vm_run", arguments: { command: "nproc", vcpu_count: 2, mem_mib: 512 } }, undefined, { timeout: 400_000 }),
      );
      assert.equal(r.exit_code, 0);
      assert.equal(r.stdout.trim(), "2");
      assert.equal(r.vcpu_count, 2);
      // A one-shot VM's TTL caps its command: the run ends at ttl_seconds, not at timeout_seconds.
      const capped = toolJson<{ timed_out: boolean; duration_ms: number }>(
        await client.callTool({ name: "vm_run", arguments: { command: "sleep 20", timeout_seconds: 60, ttl_seconds: 2 } }, undefined, { timeout: 400_000 }),
      );
      assert.equal(capped.timed_out, true);
      assert.ok(capped.duration_ms < 15_000, `ran ${capped.duration_ms} ms`);
    } finally {
      await client.close();
    }
  });
});
