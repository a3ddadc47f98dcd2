import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { after, describe, it } from "node:test";
import { processAlive } from "../src/process/process-alive.js";
import { Pyro } from "../src/sdk/pyro.js";
import { forkMemoryDir } from "../src/workspaces/fork-memory.js";
import { forkMemoryFiles } from "./helpers/fork-memory-files.js";
import { GUEST_SECRET_DIR } from "../src/workspaces/workspace-secrets.js";
import { processesMentioning, testPaths, waitFor } from "./helpers/vm-fixtures.js";

/** Forks whose guest (or host) works against them: pyro must still clean up every VM and RAM file. */

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

async function memoryDir(): Promise<string> {
  const dir = await forkMemoryDir(testPaths);
  assert.ok(dir, "this host keeps fork RAM in files");
  return dir ?? "";
}

/** The fork RAM files this test process wrote (other processes may share the directory). */
async function ourForkFiles(): Promise<string[]> {
  return (await forkMemoryFiles(testPaths, `fork-${process.pid}-`)).map((path) => basename(path));
}

/** The RAM file a VM maps, from its command line. */
async function mappedFile(pid: number): Promise<string> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
  const path = /mem-path=([^,\0]+)/.exec(cmdline)?.[1];
  assert.ok(path, cmdline);
  return path;
}

/** A process gone, or a zombie nobody has reaped yet. */
function vmGone(pid: number): boolean {
  if (!processAlive(pid)) return true;
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8")
      .replace(/^.*\) /s, "")
      .startsWith("Z");
  } catch {
    return true;
  }
}

async function out(id: string, command: string): Promise<string> {
  const r = await pyro.execWorkspace(id, command);
  assert.equal(r.exit_code, 0, `${command}: ${r.stderr}`);
  return r.stdout;
}

describe("[vm] fork against a hostile guest", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("a copy whose VM ends without pyro stopping it gives back its RAM file as soon as pyro notices", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12")).workspace_id;
    created.push(source);
    const fork = await pyro.forkWorkspace(source);
    assert.equal(fork.memory, "mapped", String(fork.note));
    const copy = fork.forks[0]!;
    created.push(copy.workspace_id);
    const pid = copy.vm!.pid;
    const ram = await mappedFile(pid);
    assert.ok(ram.startsWith(join(await memoryDir(), "fork-")), ram);

    // The VM ends without pyro stopping it: the host's OOM killer picks the biggest process (a QEMU), or QEMU crashes.
    process.kill(pid, "SIGKILL");
    await waitFor("the copy's VM to exit", async () => (vmGone(pid) ? true : undefined));
    // Any command on the copy notices; the file must not wait for a delete that may never come.
    await assert.rejects(pyro.execWorkspace(copy.workspace_id, "true"), (e: { code?: string }) => e.code === "WORKSPACE_STOPPED");
    await assert.rejects(readFile(ram), { code: "ENOENT" }, `${ram} outlived the last VM mapping it`);
    await pyro.deleteWorkspace(copy.workspace_id);
    assert.equal(await out(source, "echo alive"), "alive\n");
  });

  it("a fork whose copies' guest refuses its secrets fails with no VM, RAM file or copy left behind, and the source running", TIMEOUT, async () => {
    const source = (await pyro.createWorkspace("debian:12", { secrets: { TOKEN: "s3cret-value" } })).workspace_id;
    created.push(source);
    const before = (await pyro.listWorkspaces()).workspaces.length;
    // Root in the guest puts a read-only mount where the host writes secrets: every restored copy inherits it.
    await out(source, `mount -t tmpfs -o ro,mode=0700 tmpfs ${GUEST_SECRET_DIR}`);
    const vmsBefore = await processesMentioning(join(await memoryDir(), `fork-${process.pid}-`));
    const filesBefore = await ourForkFiles();
    const failed = await pyro.forkWorkspace(source, { count: 2 }).then(
      () => undefined,
      (error: Error) => error,
    );
    assert.ok(failed, "the fork succeeded though its copies could not be given their secrets");
    console.log(`fork refused: ${failed.message}`);
    const vmsAfter = await processesMentioning(join(await memoryDir(), `fork-${process.pid}-`));
    assert.deepEqual(
      vmsAfter.filter((p) => !vmsBefore.includes(p)),
      [],
      "a copy's VM outlived the failed fork",
    );
    assert.deepEqual(await ourForkFiles(), filesBefore);
    assert.equal((await pyro.listWorkspaces()).workspaces.length, before);
    assert.equal(await out(source, "echo alive"), "alive\n");
  });
});
