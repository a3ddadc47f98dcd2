/**
 * Benchmark (not a test) for persistent workspaces, each figure against its floor measured in the
 * same run:
 *   create from the boot template vs a cold-boot create, and vs the bare restore floor;
 *   exec round trip of `true` vs the agent's raw exec round trip;
 *   reset (snapshot restore) vs the cold boot it replaces;
 *   sync push of a 2,000-file tree, and diff of that tree.
 *
 *   node dist/bench/workspaces.js [--runs N]
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pyro } from "../src/sdk/pyro.js";
import { resolvePaths } from "../src/paths.js";
import { launchDisposableVm } from "../src/vm-run/disposable-vm.js";

const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;
const pyro = new Pyro();

function median(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
const ms = (n: number) => `${n.toFixed(0).padStart(6)} ms`;

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const v = await fn();
  return [performance.now() - t, v];
}

async function main(): Promise<void> {
  await pyro.deleteWorkspace((await pyro.createWorkspace("debian:12")).workspace_id); // builds the template if needed

  const templateCreate: number[] = [];
  const coldCreate: number[] = [];
  const execTrue: number[] = [];
  const reset: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const [t, ws] = await timed(() => pyro.createWorkspace("debian:12"));
    templateCreate.push(t);
    if (ws.vm?.start_mode !== "template_restore") throw new Error(`expected a template restore, got ${ws.vm?.start_mode}`);
    for (let j = 0; j < 5; j++) execTrue.push((await timed(() => pyro.execWorkspace(ws.workspace_id, ["true"])))[0]);
    reset.push((await timed(() => pyro.resetWorkspace(ws.workspace_id)))[0]);
    await pyro.deleteWorkspace(ws.workspace_id);
  }
  // Cold boots of a workspace (start after stop), the path create takes without a template.
  const cold = await pyro.createWorkspace("debian:12");
  for (let i = 0; i < RUNS; i++) {
    await pyro.stopWorkspace(cold.workspace_id);
    coldCreate.push((await timed(() => pyro.startWorkspace(cold.workspace_id)))[0]);
  }

  // Floor for exec: the raw agent round trip on a VM pyro already holds a connection to.
  const vm = await launchDisposableVm(resolvePaths(), "debian:12", { vcpuCount: 1, memMib: 1024, network: false });
  const rawExec: number[] = [];
  for (let i = 0; i < 3; i++) await vm.agent.exec({ command: ["true"] });
  for (let i = 0; i < 15; i++) rawExec.push((await timed(() => vm.agent.exec({ command: ["true"], cwd: "/workspace" })))[0]);
  await vm.dispose();

  // Sync push of a 2,000-file tree, then diff.
  const tree = await mkdtemp(join(tmpdir(), "pyro-bench-tree-"));
  for (let d = 0; d < 40; d++) {
    await mkdir(join(tree, `pkg${d}`));
    for (let f = 0; f < 50; f++) await writeFile(join(tree, `pkg${d}`, `mod${f}.py`), `# module ${d}.${f}\nVALUE = ${d * 100 + f}\n`.repeat(20));
  }
  const [syncMs, pushed] = await timed(() => pyro.pushWorkspaceSync(cold.workspace_id, tree));
  const [diffMs, diff] = await timed(() => pyro.diffWorkspace(cold.workspace_id));
  await pyro.deleteWorkspace(cold.workspace_id);
  await rm(tree, { recursive: true, force: true });

  const c = median(templateCreate);
  const k = median(coldCreate);
  const e = median(execTrue);
  const r = median(rawExec);
  const z = median(reset);
  console.log(`workspace benchmark (medians, runs=${RUNS})`);
  console.log(`create (template restore + baseline)  ${ms(c)}   cold boot of a workspace ${ms(k)}   ratio ${(c / k).toFixed(2)}x`);
  console.log(`exec 'true' (CLI-free SDK call)       ${ms(e)}   raw agent exec floor      ${ms(r)}   ratio ${(e / r).toFixed(2)}x`);
  console.log(`reset to baseline (snapshot restore)  ${ms(z)}   cold boot it replaces     ${ms(k)}   ratio ${(z / k).toFixed(2)}x  (target < 500 ms)`);
  console.log(`sync push of ${pushed.files} files (${(pushed.bytes / 1024).toFixed(0)} KiB)   ${ms(syncMs)}`);
  console.log(`diff of that tree (${diff.files.length} files changed)        ${ms(diffMs)}`);
}

await main();
