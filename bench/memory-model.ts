/**
 * Benchmark (not a test) for issue #10's targets, each printed as a ratio against the kernel-only
 * boot floor measured in this same run (the guest kernel on QEMU microvm, no initramfs, until it
 * finds no root: what no cold boot can beat), medians of --runs:
 *   workspace create (no seed), reset to the baseline (the template), reset to a user snapshot,
 *   `pyro run debian:12 -- true` in a fresh CLI process, the same run through an SDK instance that
 *   keeps a warm VM (what `pyro mcp serve` does), workspace create (no seed) through that instance
 *   when its warm workspace is ready, exec `true` (SDK) against the agent's raw exec (on another VM
 *   of the same shape, and on the workspace's own VM);
 *   host memory of idle workspaces: each VMM's PSS (/proc/<pid>/smaps_rollup) with --idle held at once;
 *   fork: `workspace fork --count --fork-copies` of a workspace that wrote a file, wall time per copy,
 *   how long the source was paused, PSS per copy while held;
 *   with --density N: N idle workspaces held at once, create time, PSS per VM and MemAvailable as the
 *   count grows, then `exec true` in every one.
 *
 *   node dist/bench/memory-model.js [--runs N] [--idle N] [--density N] [--fork-copies N]
 */
import { spawn, spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { resolvePaths } from "../src/paths.js";
import { hostTscKhz } from "../src/runtime/accelerator.js";
import { prepareGuestRuntime } from "../src/runtime/guest-runtime.js";
import { AgentClient } from "../src/guest-protocol/agent-client.js";
import { buildQemuArgs, kernelCmdline, runFiles } from "../src/runtime/qemu/qemu-args.js";
import type { VmLaunchSpec } from "../src/runtime/vmm-backend.js";
import { Pyro } from "../src/sdk/pyro.js";
import { launchDisposableVm } from "../src/vm-run/disposable-vm.js";
import { templateMemoryMode } from "../src/workspaces/boot-templates.js";

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const RUNS = arg("--runs", 5);
const IDLE = arg("--idle", 5);
const DENSITY = arg("--density", 0);
const FORK_COPIES = arg("--fork-copies", 4);
const CLI = join(import.meta.dirname, "..", "src", "cli", "main.js");
const paths = resolvePaths();
const pyro = new Pyro();

function median(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t = performance.now();
  const v = await fn();
  return [performance.now() - t, v];
}

/** The guest kernel alone: microvm, same CPU/accel options, no initramfs or disk, until it reports no root. */
async function kernelOnlyBoot(): Promise<number> {
  const runtime = await prepareGuestRuntime(paths);
  const tscKhz = await hostTscKhz();
  const spec: VmLaunchSpec = {
    kernelPath: runtime.kernel.vmlinuxPath,
    initramfsPath: runtime.initramfs.path,
    rootDisk: { path: "/nonexistent", format: "raw", cache: "unsafe" },
    vcpuCount: 1,
    memMib: 1024,
    hostname: "pyro",
    network: "none",
    runDir: "/nonexistent",
    bootTimeoutMs: 60_000,
    dieWithParent: true,
    ownsRunDir: false,
  };
  const full = buildQemuArgs(spec, runtime.accelerator.accel, tscKhz);
  const argAfter = (flag: string) => full[full.indexOf(flag) + 1]!;
  const args = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-M",
    "microvm",
    "-m",
    "1024",
    "-smp",
    "1",
    "-accel",
    argAfter("-accel"),
    "-cpu",
    argAfter("-cpu"),
    "-kernel",
    spec.kernelPath,
    "-append",
    kernelCmdline(spec, runtime.accelerator.accel, tscKhz),
    "-serial",
    "stdio",
  ];
  const started = performance.now();
  const child = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "ignore"] });
  try {
    return await new Promise<number>((resolve, reject) => {
      let seen = "";
      child.stdout.on("data", (chunk: Buffer) => {
        seen += chunk.toString("latin1");
        if (/Unable to mount root|No working init|Kernel panic/.test(seen)) resolve(performance.now() - started);
      });
      child.once("exit", () => reject(new Error(`the kernel exited without reaching the root mount: ${seen.slice(-500)}`)));
    });
  } finally {
    child.kill("SIGKILL");
  }
}

function pyroRunCli(): number {
  const started = performance.now();
  const r = spawnSync(process.execPath, [CLI, "run", "debian:12", "--json", "--", "true"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`pyro run failed: ${r.stderr}${r.stdout}`);
  return performance.now() - started;
}

async function pssMib(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) / 1024;
}

async function memAvailableMib(): Promise<number> {
  return Number(/^MemAvailable:\s+(\d+) kB/m.exec(await readFile("/proc/meminfo", "utf8"))?.[1] ?? NaN) / 1024;
}

/**
 * `exec true` through the SDK on workspace `id`, against the agent's own exec (one connection, no
 * pyro around it), taken in turns so that both see the same moments of a shared, noisy host: timed
 * one after the other, a burst of load on either side skews the ratio. Two raw sides:
 * - `raw`: a disposable VM of the same machine (the figure). Two guests of one shape run
 *   `true` several ms apart from each other (their translation caches and page faults differ), so
 *   this ratio also moves with the guest's speed, not only pyro's.
 * - `rawSame`: the workspace's own VM, on a connection opened (untimed) between the SDK's turns,
 *   as the agent serves one host at a time: the same guest, so the difference is pyro's alone.
 */
async function execSdkAgainstRaw(id: string): Promise<{ sdk: number[]; raw: number[]; rawSame: number[] }> {
  const vm = await launchDisposableVm(paths, "debian:12", { vcpuCount: 1, memMib: 1024, network: false });
  const ownSocket = runFiles(join(paths.runtimeDir, id)).agentSocket;
  const rawOnOwnVm = async (): Promise<number> => {
    const agent = await AgentClient.connect(ownSocket, Date.now() + 10_000);
    try {
      await agent.waitReady(Date.now() + 10_000);
      return (await timed(() => agent.exec({ command: ["true"] })))[0];
    } finally {
      agent.close();
    }
  };
  try {
    for (let i = 0; i < 5; i++) {
      // Warm both translation caches and the host's code paths.
      await vm.agent.exec({ command: ["true"] });
      await pyro.execWorkspace(id, ["true"]);
      await rawOnOwnVm();
    }
    const sdk: number[] = [];
    const raw: number[] = [];
    const rawSame: number[] = [];
    for (let i = 0; i < 20; i++) {
      sdk.push((await timed(() => pyro.execWorkspace(id, ["true"])))[0]);
      raw.push((await timed(() => vm.agent.exec({ command: ["true"] })))[0]);
      rawSame.push(await rawOnOwnVm());
    }
    return { sdk, raw, rawSame };
  } finally {
    await vm.dispose();
  }
}

async function main(): Promise<void> {
  const runtime = await prepareGuestRuntime(paths);
  const memory = await templateMemoryMode(paths);
  console.log(
    `issue #10 bench: accel=${runtime.accelerator.accel} kernel=${runtime.kernel.release} template memory=${memory.mode} memory return=${runtime.memoryReturn} runs=${RUNS}`,
  );
  // Warm-up outside the timings: page cache, the template of the default shape and its mounted
  // baseline (built by the first reset to the baseline of an unseeded workspace).
  await kernelOnlyBoot();
  const warmUp = await pyro.createWorkspace("debian:12");
  await pyro.resetWorkspace(warmUp.workspace_id);
  await pyro.deleteWorkspace(warmUp.workspace_id);
  pyroRunCli();

  const floor: number[] = [];
  const create: number[] = [];
  const run: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    floor.push(await kernelOnlyBoot());
    const [ms, ws] = await timed(() => pyro.createWorkspace("debian:12"));
    create.push(ms);
    await pyro.deleteWorkspace(ws.workspace_id);
    run.push(pyroRunCli());
  }
  const ws = await pyro.createWorkspace("debian:12");
  const resetBaseline: number[] = [];
  const resetSnapshot: number[] = [];
  const execSdk: number[] = [];
  const execRaw: number[] = [];
  const execRawSame: number[] = [];
  const forkPerCopy: number[] = [];
  const forkPaused: number[] = [];
  const forkPss: number[] = [];
  let forkMemory = "";
  try {
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo x > /workspace/x"]);
    await pyro.createSnapshot(ws.workspace_id, "point");
    for (let i = 0; i < RUNS; i++) {
      resetBaseline.push((await timed(() => pyro.resetWorkspace(ws.workspace_id)))[0]);
      resetSnapshot.push((await timed(() => pyro.resetWorkspace(ws.workspace_id, { snapshot: "point" })))[0]);
    }
    // Fork: copies continue from the running workspace; per copy = the whole call / copies.
    for (let i = 0; i < RUNS; i++) {
      const [ms, forked] = await timed(() => pyro.forkWorkspace(ws.workspace_id, { count: FORK_COPIES }));
      forkPerCopy.push(ms / FORK_COPIES);
      forkPaused.push(forked.source_paused_ms);
      forkMemory = forked.memory;
      if (i === RUNS - 1) {
        await new Promise((r) => setTimeout(r, 2_000));
        forkPss.push(...(await Promise.all(forked.forks.map((f) => pssMib(f.vm!.pid)))));
      }
      for (const f of forked.forks) await pyro.deleteWorkspace(f.workspace_id);
    }
    const exec = await execSdkAgainstRaw(ws.workspace_id);
    execSdk.push(...exec.sdk);
    execRaw.push(...exec.raw);
    execRawSame.push(...exec.rawSame);
  } finally {
    await pyro.deleteWorkspace(ws.workspace_id).catch(() => undefined);
  }
  const warmRun: number[] = [];
  const warmCreate: number[] = [];
  const warm = new Pyro({ warmVm: { environment: "debian:12" } });
  try {
    for (let i = 0; i < RUNS; i++) {
      await warm.warmUp("run");
      warmRun.push((await timed(() => warm.run("debian:12", ["true"])))[0]);
    }
    for (let i = 0; i < RUNS; i++) {
      await warm.warmUp("workspace");
      const [ms, w] = await timed(() => warm.createWorkspace("debian:12"));
      warmCreate.push(ms);
      await warm.deleteWorkspace(w.workspace_id);
    }
  } finally {
    await warm.close();
  }

  const f = median(floor);
  const row = (what: string, samples: number[], target: string) =>
    console.log(`${what.padEnd(36)} ${median(samples).toFixed(0).padStart(6)} ms  ${(median(samples) / f).toFixed(2).padStart(5)}x floor   (target ${target})`);
  console.log(`${"kernel-only boot floor".padEnd(36)} ${f.toFixed(0).padStart(6)} ms`);
  row("workspace create (no seed)", create, "≤ 0.20x");
  row("reset to baseline (the template)", resetBaseline, "≤ 0.15x");
  row(`reset to a user snapshot (${memory.mode === "shared_file" ? "mapped" : "streamed"})`, resetSnapshot, "≤ 0.15x");
  row(`fork, per copy (${FORK_COPIES} copies, ${forkMemory})`, forkPerCopy, "≤ 0.25x");
  console.log(`${"  source paused / PSS per held copy".padEnd(36)} ${median(forkPaused).toFixed(0).padStart(6)} ms  ${median(forkPss).toFixed(0)} MiB`);
  row("pyro run debian:12 -- true (CLI)", run, "≤ 0.40x");
  row("run true, SDK with a warm VM", warmRun, "tens of ms");
  row("create, warm VM (SDK, no seed)", warmCreate, "tens of ms");
  const execRow = (what: string, rawSamples: number[]) =>
    console.log(
      `${what.padEnd(36)} ${median(execSdk).toFixed(1).padStart(6)} ms / ${median(rawSamples).toFixed(1)} ms = ${(median(execSdk) / median(rawSamples)).toFixed(2)}x   (target ≤ 1.3x; difference ${(median(execSdk) - median(rawSamples)).toFixed(1)} ms)`,
    );
  execRow("exec true: SDK / raw agent", execRaw);
  execRow("  same, raw on the workspace's own VM", execRawSame);

  // Idle memory: several workspaces held at once, so shared pages are split between them.
  const held: { id: string; pid: number }[] = [];
  try {
    for (let i = 0; i < IDLE; i++) {
      const w = await pyro.createWorkspace("debian:12");
      held.push({ id: w.workspace_id, pid: w.vm!.pid });
    }
    await new Promise((r) => setTimeout(r, 5_000));
    const pss = await Promise.all(held.map((h) => pssMib(h.pid)));
    console.log(`${"VMM PSS per idle workspace".padEnd(36)} ${median(pss).toFixed(0).padStart(6)} MiB  (${IDLE} held, 1 GiB guests; target ≤ 64 MiB)`);
  } finally {
    for (const h of held) await pyro.deleteWorkspace(h.id).catch(() => undefined);
  }

  if (DENSITY > 0) await density(DENSITY);
}

async function density(count: number): Promise<void> {
  const held: { id: string; pid: number }[] = [];
  const createMs: number[] = [];
  console.log(`density: ${count} idle 1 GiB workspaces held at once (MemAvailable before: ${(await memAvailableMib()).toFixed(0)} MiB)`);
  console.log("  count  create ms (last 5)  PSS/VM MiB  MemAvailable MiB");
  try {
    for (let i = 1; i <= count; i++) {
      const [ms, w] = await timed(() => pyro.createWorkspace("debian:12"));
      createMs.push(ms);
      held.push({ id: w.workspace_id, pid: w.vm!.pid });
      if (i % 5 === 0 || i === count) {
        const pss = await Promise.all(held.map((h) => pssMib(h.pid)));
        const mean = pss.reduce((a, b) => a + b, 0) / pss.length;
        console.log(
          `  ${String(i).padStart(5)}  ${median(createMs.slice(-5)).toFixed(0).padStart(18)}  ${mean.toFixed(0).padStart(10)}  ${(await memAvailableMib()).toFixed(0).padStart(16)}`,
        );
      }
    }
    let answered = 0;
    for (const h of held) if ((await pyro.execWorkspace(h.id, ["true"])).exit_code === 0) answered++;
    const pss = await Promise.all(held.map((h) => pssMib(h.pid)));
    console.log(
      `  all ${count}: ${answered}/${count} answered exec afterwards; PSS/VM after exec ${(pss.reduce((a, b) => a + b, 0) / pss.length).toFixed(0)} MiB; MemAvailable ${(await memAvailableMib()).toFixed(0)} MiB`,
    );
  } finally {
    for (const h of held) await pyro.deleteWorkspace(h.id).catch(() => undefined);
  }
}

await main();
