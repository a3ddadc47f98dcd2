/**
 * A long-lived pyro process holding a warm workspace, for the warm-create crash points: it makes
 * one, says `ready <id> <dir>`, then waits to be killed ("idle"), exits normally ("exit", as
 * `pyro mcp serve` does when its client goes), or creates a workspace and SIGKILLs itself at the
 * moment the taken workspace's record would be written ("at-write": after the warm VM was taken,
 * resumed and given its identity, before anything records it).
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Pyro } from "../../src/sdk/pyro.js";
import type { WorkspaceContext } from "../../src/workspaces/workspace-context.js";

const mode = process.argv[2];
const pyro = new Pyro({ warmVm: { environment: "debian:12", minAvailableMib: 0 } });
if (!(await pyro.warmUp())) {
  process.stdout.write("no warm workspace\n");
  process.exit(1);
}
const ctx = await (pyro as unknown as { workspaces: Promise<WorkspaceContext> }).workspaces;
const [id] = (await readdir(ctx.store.rootDir)).filter((name) => /^ws-[a-z2-7]+$/.test(name));
process.stdout.write(`ready ${id} ${join(ctx.store.rootDir, id!)}\n`);
if (mode === "exit") process.exit(0);
if (mode === "at-write") {
  ctx.store.write = async () => {
    process.kill(process.pid, "SIGKILL");
    await new Promise(() => undefined);
  };
  await pyro.createWorkspace("debian:12");
}
await new Promise(() => undefined);
