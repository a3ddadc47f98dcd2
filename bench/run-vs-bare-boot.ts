/**
 * Benchmark (not a test): `pyro run debian:12 -- true` end to end, as a user runs it (a fresh CLI
 * process), against a bare QEMU boot of the same kernel, initramfs and image until the agent's first
 * reply — the floor pyro cannot beat with a cold boot. Both measured in this run, interleaved, and
 * printed as a ratio. Also: the agent's round trip for `hello` and for exec of `true`.
 *
 *   node dist/bench/run-vs-bare-boot.js [--runs N]
 */
import { spawn, spawnSync } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { EnvironmentStore } from "../src/environments/environment-store.js";
import { AgentClient } from "../src/guest-protocol/agent-client.js";
import { resolvePaths } from "../src/paths.js";
import { hostTscKhz } from "../src/runtime/accelerator.js";
import { prepareGuestRuntime } from "../src/runtime/guest-runtime.js";
import { buildQemuArgs, runFiles } from "../src/runtime/qemu/qemu-args.js";
import { launchDisposableVm } from "../src/vm-run/disposable-vm.js";

const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7;
const CLI = join(import.meta.dirname, "..", "src", "cli", "main.js");
const paths = resolvePaths();

function stats(samples: number[]): { min: number; median: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]! };
}
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

async function bareBoot(): Promise<number> {
  const runtime = await prepareGuestRuntime(paths);
  const env = await new EnvironmentStore(paths).require("debian:12");
  const runDir = await mkdtemp(join(paths.runtimeDir, "bench-"));
  const overlay = join(runDir, "root.qcow2");
  spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", env.imagePath, "-F", "raw", overlay]);
  const spec = {
    kernelPath: runtime.kernel.vmlinuxPath,
    initramfsPath: runtime.initramfs.path,
    rootDisk: { path: overlay, format: "qcow2" as const, cache: "unsafe" as const },
    vcpuCount: 1,
    memMib: 1024,
    hostname: "pyro",
    network: "none" as const,
    runDir,
    bootTimeoutMs: 60_000,
    dieWithParent: true,
    ownsRunDir: true,
  };
  const args = buildQemuArgs(spec, runtime.accelerator.accel, await hostTscKhz());
  const err = openSync(join(runDir, "stderr"), "w");
  const started = performance.now();
  const child = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", err] });
  closeSync(err);
  try {
    const agent = await AgentClient.connect(runFiles(runDir).agentSocket, Date.now() + 60_000);
    await agent.waitReady(Date.now() + 60_000);
    const elapsed = performance.now() - started;
    agent.close();
    return elapsed;
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    await rm(runDir, { recursive: true, force: true });
  }
}

function pyroRunCli(): number {
  const started = performance.now();
  const r = spawnSync(process.execPath, [CLI, "run", "debian:12", "--json", "--", "true"], { encoding: "utf8" });
  const elapsed = performance.now() - started;
  if (r.status !== 0) throw new Error(`pyro run failed: ${r.stderr}${r.stdout}`);
  return elapsed;
}

async function roundTrips(): Promise<{ hello: number[]; execTrue: number[] }> {
  const vm = await launchDisposableVm(paths, "debian:12", { vcpuCount: 1, memMib: 1024, network: false });
  try {
    const hello: number[] = [];
    const execTrue: number[] = [];
    for (let i = 0; i < 5; i++) await vm.agent.exec({ command: ["true"] }); // warm the translation cache
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await vm.agent.hello();
      hello.push(performance.now() - t);
    }
    for (let i = 0; i < 30; i++) {
      const t = performance.now();
      await vm.agent.exec({ command: ["true"] });
      execTrue.push(performance.now() - t);
    }
    return { hello, execTrue };
  } finally {
    await vm.dispose();
  }
}

async function main(): Promise<void> {
  const runtime = await prepareGuestRuntime(paths);
  console.log(`pyro benchmark: accel=${runtime.accelerator.accel} kernel=${runtime.kernel.release} runs=${RUNS}`);
  await bareBoot(); // warm page cache for kernel, initramfs, image
  pyroRunCli();
  const bare: number[] = [];
  const cli: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareBoot());
    cli.push(pyroRunCli());
  }
  const b = stats(bare);
  const c = stats(cli);
  console.log(`bare QEMU boot → agent's first reply   min ${fmt(b.min)}  median ${fmt(b.median)}`);
  console.log(`pyro run debian:12 -- true (CLI)       min ${fmt(c.min)}  median ${fmt(c.median)}`);
  console.log(`ratio pyro run / bare boot             min ${(c.min / b.min).toFixed(2)}x  median ${(c.median / b.median).toFixed(2)}x  (target ≤ 1.30x)`);
  const rt = await roundTrips();
  const h = stats(rt.hello);
  const e = stats(rt.execTrue);
  console.log(`agent hello round trip (200)           min ${fmt(h.min)}  median ${fmt(h.median)}`);
  console.log(`agent exec 'true' round trip (30)      min ${fmt(e.min)}  median ${fmt(e.median)}`);
}

await main();
