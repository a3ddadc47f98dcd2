/**
 * Benchmark (not a test): boot templates whose RAM is a shared file (restores map it copy-on-write)
 * against today's streamed templates (every restore loads all guest RAM), both measured in this
 * run, interleaved, and printed as ratios:
 *   workspace create latency, and the host memory (PSS, Private_Dirty, RSS from
 *   /proc/<pid>/smaps_rollup) of each VMM while several workspaces sit idle;
 *   `pyro run debian:12 -- true` end to end (a fresh CLI process).
 *
 *   node dist/bench/shared-template-memory.js [--runs N] [--idle N]
 */
import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Pyro } from "../src/sdk/pyro.js";

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const RUNS = arg("--runs", 5);
/** Workspaces alive at once when memory is read: sharing only shows with more than one. */
const IDLE = arg("--idle", 3);
const CLI = join(import.meta.dirname, "..", "src", "cli", "main.js");
const MODES = ["streamed", "shared_file"] as const;
type Mode = (typeof MODES)[number];
const pyro = new Pyro();

function median(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Selects the template memory mode for this process and the CLI processes it starts. */
function useMode(mode: Mode): void {
  if (mode === "streamed") process.env.PYRO_TEMPLATE_MEMORY = "streamed";
  else delete process.env.PYRO_TEMPLATE_MEMORY;
}

async function smaps(pid: number): Promise<{ pss: number; privateDirty: number; rss: number }> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  const mib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) / 1024;
  return { pss: mib("Pss"), privateDirty: mib("Private_Dirty"), rss: mib("Rss") };
}

function pyroRun(): number {
  const started = performance.now();
  const r = spawnSync(process.execPath, [CLI, "run", "debian:12", "--json", "--", "true"], { encoding: "utf8", env: process.env });
  if (r.status !== 0) throw new Error(`pyro run failed: ${r.stderr}${r.stdout}`);
  return performance.now() - started;
}

async function main(): Promise<void> {
  const results = Object.fromEntries(
    MODES.map((m) => [
      m,
      { create: [] as number[], run: [] as number[], pss: [] as number[], privateDirty: [] as number[], rss: [] as number[], startMode: new Set<string>() },
    ]),
  );
  for (const mode of MODES) {
    // Builds this mode's template if needed, outside the timings.
    useMode(mode);
    await pyro.deleteWorkspace((await pyro.createWorkspace("debian:12")).workspace_id);
    pyroRun();
  }
  for (let run = 0; run < RUNS; run++) {
    for (const mode of run % 2 ? [...MODES].reverse() : MODES) {
      useMode(mode);
      const r = results[mode]!;
      const ids: string[] = [];
      const pids: number[] = [];
      try {
        for (let i = 0; i < IDLE; i++) {
          const started = performance.now();
          const ws = await pyro.createWorkspace("debian:12");
          r.create.push(performance.now() - started);
          ids.push(ws.workspace_id);
          pids.push(ws.vm!.pid);
          r.startMode.add(ws.vm!.start_mode);
        }
        await new Promise((res) => setTimeout(res, 2_000)); // idle
        for (const pid of pids) {
          const m = await smaps(pid);
          r.pss.push(m.pss);
          r.privateDirty.push(m.privateDirty);
          r.rss.push(m.rss);
        }
      } finally {
        for (const id of ids) await pyro.deleteWorkspace(id).catch(() => undefined);
      }
      r.run.push(pyroRun());
    }
  }
  useMode("shared_file");
  const before = results.streamed!;
  const after = results.shared_file!;
  const row = (what: string, unit: string, key: "create" | "run" | "pss" | "privateDirty" | "rss") =>
    console.log(
      `${what.padEnd(34)} ${median(before[key]).toFixed(0).padStart(7)} ${unit}  ${median(after[key]).toFixed(0).padStart(7)} ${unit}  ratio ${(median(after[key]) / median(before[key])).toFixed(2)}`,
    );
  console.log(`runs ${RUNS}, ${IDLE} idle 1 GiB workspaces at a time; medians; before = streamed template, after = shared RAM file`);
  console.log(`start modes: before ${[...before.startMode].join(",")}; after ${[...after.startMode].join(",")}`);
  console.log(`${"".padEnd(34)} ${"before".padStart(10)} ${"after".padStart(10)}`);
  row("workspace create", "ms ", "create");
  row("pyro run -- true (CLI process)", "ms ", "run");
  row("VMM PSS per idle workspace", "MiB", "pss");
  row("VMM Private_Dirty per idle ws", "MiB", "privateDirty");
  row("VMM RSS per idle workspace", "MiB", "rss");
}

await main();
