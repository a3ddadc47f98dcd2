/**
 * Benchmark (not a test): what a fresh `pyro` process costs for the commands an agent runs most,
 * against bare `node -e 0` (the floor: Node's own start-up) measured in the same run, interleaved.
 * A small seeded workspace with one change serves exec, diff and export.
 *
 *   node dist/bench/cli-startup.js [--runs N] [--cli PATH]...
 *
 * Each --cli names another built CLI entry point (e.g. a checkout of main's dist/src/cli/main.js)
 * measured beside this one in the same rounds, against the same workspace and floor.
 */
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7;
const THIS_CLI = join(import.meta.dirname, "..", "src", "cli", "main.js");
const CLIS = [THIS_CLI, ...process.argv.flatMap((a, i) => (a === "--cli" ? [process.argv[i + 1]!] : []))];

function median(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function run(args: string[]): { ms: number; stdout: string } {
  const started = performance.now();
  const r = spawnSync(process.execPath, args, { encoding: "utf8" });
  const ms = performance.now() - started;
  if (r.status !== 0) throw new Error(`${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return { ms, stdout: r.stdout };
}

async function main(): Promise<void> {
  const seed = await mkdtemp(join(tmpdir(), "pyro-bench-startup-"));
  await mkdir(join(seed, "src"));
  for (let i = 0; i < 20; i++) await writeFile(join(seed, "src", `f${i}.txt`), `file ${i}\n`);
  const ws = run([THIS_CLI, "workspace", "create", "debian:12", "--seed-path", seed, "--id-only"]).stdout.trim();
  const out = join(seed, "export.tar");
  try {
    run([THIS_CLI, "workspace", "exec", ws, "--", "sh", "-c", "echo changed > /workspace/src/f0.txt"]);
    const cases: [string, (cli: string) => string[]][] = [
      ["pyro --version", (cli) => [cli, "--version"]],
      ["workspace exec WS -- true", (cli) => [cli, "workspace", "exec", ws, "--", "true"]],
      ["workspace diff WS --summary", (cli) => [cli, "workspace", "diff", ws, "--summary"]],
      ["workspace export WS src", (cli) => [cli, "workspace", "export", ws, "src", "--output", out, "--json"]],
      ["run debian:12 -- true", (cli) => [cli, "run", "debian:12", "--", "true"]],
    ];
    const floor: number[] = [];
    const samples = new Map<string, number[]>();
    // One warm-up round: the compile cache and the page cache, for every CLI.
    for (const [, args] of cases) {
      for (const cli of CLIS) {
        run(args(cli));
        await rm(out, { force: true });
      }
    }
    for (let i = 0; i < RUNS; i++) {
      floor.push(run(["-e", "0"]).ms);
      for (const [name, args] of cases) {
        for (const cli of CLIS) {
          const key = `${name}\0${cli}`;
          samples.set(key, [...(samples.get(key) ?? []), run(args(cli)).ms]);
          await rm(out, { force: true });
        }
      }
    }
    const f = median(floor);
    console.log(`CLI start-up (medians of ${RUNS} runs, interleaved); floor node -e 0: ${f.toFixed(0)} ms`);
    for (const [name] of cases) {
      for (const cli of CLIS) {
        const m = median(samples.get(`${name}\0${cli}`)!);
        const label = CLIS.length > 1 ? `  [${cli === THIS_CLI ? "this" : cli}]` : "";
        console.log(`${name.padEnd(30)} ${m.toFixed(0).padStart(6)} ms  (${(m - f).toFixed(0).padStart(5)} ms over node)${label}`);
      }
    }
  } finally {
    run([THIS_CLI, "workspace", "delete", ws]);
    await rm(seed, { recursive: true, force: true });
  }
}

await main();
