import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, describe, it } from "node:test";
import { pathExists } from "../src/storage/path-exists.js";
import { Pyro } from "../src/sdk/pyro.js";
import { templateMemoryMode } from "../src/workspaces/boot-templates.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

/** The RAM file a VM maps (its memory-backend-file's mem-path). */
async function ramFileOf(pid: number): Promise<string> {
  const arg = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").find((a) => a.startsWith("memory-backend-file,"));
  assert.ok(arg, "the VM's RAM is a mapped file");
  return /mem-path=([^,]+)/.exec(arg)![1]!;
}

async function vmPid(id: string): Promise<number> {
  const ws = await pyro.statusWorkspace(id);
  assert.ok(ws.vm, `workspace ${id} is running`);
  return ws.vm.pid;
}

/** A mounted baseline's RAM file: <template>.ws-<build>.ram (boot-templates.ts mountedBaselineMemoryName). */
const MOUNTED_RAM = /\.ws-[0-9a-f]+\.ram$/;

describe("[vm] reset to the baseline with /workspace already mounted", () => {
  const created: string[] = [];
  let seedDir: string | undefined;
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
    if (seedDir) await rm(seedDir, { recursive: true, force: true });
  });

  it("one whose empty image nothing else links (its cache or home was removed) goes with its RAM file", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    await pyro.resetWorkspace(ws.workspace_id);
    const ram = await ramFileOf(await vmPid(ws.workspace_id));
    assert.match(basename(ram), MOUNTED_RAM);
    // Another home's baseline, once that home is gone: its seed.ext4 is the image's last link.
    const template = /^(.+)\.ws-[0-9a-f]+\.ram$/.exec(basename(ram))![1]!;
    const orphan = join(testPaths.cacheDir, "templates", template, "ws-fedcba");
    const memory = await templateMemoryMode(testPaths);
    assert.equal(memory.mode, "shared_file");
    const orphanRam = join(memory.dir, `${template}.ws-fedcba.ram`);
    await mkdir(orphan);
    for (const file of ["seed.ext4", "workspace.qcow2", "state.bin"]) await writeFile(join(orphan, file), "");
    await writeFile(join(orphan, "manifest.json"), JSON.stringify({ memoryFile: basename(orphanRam), createdAt: "2000-01-01T00:00:00.000Z" }));
    await writeFile(orphanRam, "");
    await pyro.resetWorkspace(ws.workspace_id);
    assert.equal(await pathExists(orphanRam), false, "the orphan's RAM file is left on the memory filesystem");
    assert.equal(await pathExists(orphan), false);
    // This home's own is kept and used.
    assert.equal(await ramFileOf(await vmPid(ws.workspace_id)), ram);
  });

  it("restores a saved VM that mounted the empty image, whose disk agrees with its memory", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    const id = ws.workspace_id;
    const fresh = (await pyro.execWorkspace(id, ["ls", "-A", "/workspace"])).stdout;
    await pyro.execWorkspace(id, ["sh", "-c", "echo before > /workspace/before.txt && mkdir /workspace/d"]);

    const first = await pyro.resetWorkspace(id);
    assert.equal(first.start_mode, "template_restore");
    const ram = await ramFileOf(await vmPid(id));
    assert.match(basename(ram), MOUNTED_RAM, `the reset VM maps ${ram}, not a mounted baseline`);
    // Mounted (rw, ext4, its own device), and as a fresh create left it: the writes before the reset are gone.
    const mounts = (await pyro.execWorkspace(id, ["cat", "/proc/mounts"])).stdout;
    assert.match(mounts, /^\S+ \/workspace ext4 rw,/m, mounts);
    assert.equal((await pyro.execWorkspace(id, ["ls", "-A", "/workspace"])).stdout, fresh);

    // Writes land on the disk the host reads (diff) and that a cold boot mounts.
    await pyro.execWorkspace(id, ["sh", "-c", "echo after > /workspace/after.txt"]);
    assert.deepEqual(
      (await pyro.diffWorkspace(id)).files.map((f) => [f.path, f.status]),
      [["after.txt", "added"]],
    );
    await pyro.stopWorkspace(id);
    const started = await pyro.startWorkspace(id);
    assert.equal(started.vm?.start_mode, "cold_boot");
    assert.equal((await pyro.execWorkspace(id, ["cat", "/workspace/after.txt"])).stdout, "after\n");
    const check = await pyro.execWorkspace(id, ["sh", "-c", "dmesg | grep -i 'ext4.*error' || true"]);
    assert.equal(check.stdout, "", "the guest kernel found no ext4 errors");

    // The next reset reuses it; once its RAM file is gone (a reboot), one is built again.
    await pyro.resetWorkspace(id);
    assert.equal(await ramFileOf(await vmPid(id)), ram);
    assert.equal((await pyro.execWorkspace(id, ["ls", "-A", "/workspace"])).stdout, fresh);
    // A build killed midway left its directory and RAM file: the next reset removes both.
    const template = (
      JSON.parse(await readFile(join(testPaths.stateDir, "workspaces", id, "workspace.json"), "utf8")) as { snapshots: { template?: string }[] }
    ).snapshots[0]!.template!;
    const memory = await templateMemoryMode(testPaths);
    assert.equal(memory.mode, "shared_file");
    const dead = spawnSync("true").pid!;
    const killedBuild = join(testPaths.cacheDir, "templates", template, `ws-abcdef.partial-${dead}`);
    const killedRam = join(memory.dir, `${template}.ws-abcdef.ram`);
    await mkdir(killedBuild);
    await writeFile(killedRam, "");
    await rm(ram);
    await pyro.resetWorkspace(id);
    assert.equal(await pathExists(killedBuild), false, "a killed build's directory is left");
    assert.equal(await pathExists(killedRam), false, "a killed build's RAM file is left on the memory filesystem");
    const rebuilt = await ramFileOf(await vmPid(id));
    assert.match(basename(rebuilt), MOUNTED_RAM);
    assert.notEqual(rebuilt, ram);
    assert.equal((await pyro.execWorkspace(id, ["ls", "-A", "/workspace"])).stdout, fresh);
    await pyro.execWorkspace(id, ["sh", "-c", "echo again > /workspace/again.txt && sync"]);
    assert.equal((await pyro.execWorkspace(id, ["cat", "/workspace/again.txt"])).stdout, "again\n");

    // Its overlay gone (another pyro removing a stale one mid-reset): the reset takes the template's path.
    const build = /\.(ws-[0-9a-f]+)\.ram$/.exec(rebuilt)![1]!;
    await rm(join(testPaths.cacheDir, "templates", template, build, "workspace.qcow2"));
    await pyro.resetWorkspace(id);
    assert.doesNotMatch(basename(await ramFileOf(await vmPid(id))), MOUNTED_RAM);
    assert.equal((await pyro.execWorkspace(id, ["ls", "-A", "/workspace"])).stdout, fresh);
  });

  it("is not used for a seeded workspace: its own image is mounted", TIMEOUT, async () => {
    seedDir = await mkdtemp(join(tmpdir(), "pyro-seed-"));
    await writeFile(join(seedDir, "seeded.txt"), "from the seed\n");
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seedDir });
    created.push(ws.workspace_id);
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo x > /workspace/seeded.txt"]);
    await pyro.resetWorkspace(ws.workspace_id);
    const ram = await ramFileOf(await vmPid(ws.workspace_id));
    assert.doesNotMatch(basename(ram), MOUNTED_RAM);
    assert.ok(await pathExists(ram));
    assert.equal((await pyro.execWorkspace(ws.workspace_id, ["cat", "/workspace/seeded.txt"])).stdout, "from the seed\n");
  });
});
