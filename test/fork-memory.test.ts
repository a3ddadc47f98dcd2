import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { PyroPaths } from "../src/paths.js";
import { QemuBackend } from "../src/runtime/qemu/qemu-backend.js";
import { templateMemoryMode } from "../src/workspaces/boot-templates.js";
import { finishForkMemory, forkMemoryDir, newForkMemoryPath, releaseUnmappedForkMemory } from "../src/workspaces/fork-memory.js";

// The real backend: which RAM files are in use is read from this host's QEMU processes (none maps
// the files made here). Paths of its own, so the memory directory is this test's alone.
const backend = new QemuBackend({ qemuBinary: "/usr/bin/qemu-system-x86_64", accel: "tcg", tscKhz: undefined });
const release = (paths: PyroPaths) => releaseUnmappedForkMemory(paths, async () => backend);

/** What is left in a fork directory (none once the directory itself is gone). */
async function left(dir: string): Promise<string[]> {
  return readdir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return [];
    throw error;
  });
}

/** A pid no process has (a child that has exited and been reaped). */
function deadPid(): number {
  const child = spawnSync("true");
  return child.pid ?? 0;
}

describe("fork RAM files on the memory filesystem", () => {
  let home: string;
  let paths: PyroPaths;
  let memoryDir: string | undefined;
  let dir: string | undefined;
  before(async () => {
    home = await mkdtemp(join(tmpdir(), "pyro-fork-memory-"));
    paths = { cacheDir: join(home, "cache"), stateDir: join(home, "state"), runtimeDir: join(home, "run") };
    const memory = await templateMemoryMode(paths);
    if (memory.mode === "shared_file") {
      memoryDir = memory.dir;
      dir = await forkMemoryDir(paths);
    }
  });
  after(async () => {
    if (memoryDir) await rm(memoryDir, { recursive: true, force: true });
    await rm(home, { recursive: true, force: true });
  });

  it("a finished fork's file goes once no VM maps it, even while the pyro process that wrote it lives on (pyro mcp serve)", async (t) => {
    if (!dir) return t.skip("no memory filesystem here");
    // Written by a live, long-running process (our parent stands in for an MCP server), fork finished.
    const finished = join(dir, `fork-${process.ppid}-a1b2c3d4e5f6.ram`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(finished, "guest memory");
    assert.equal(await release(paths), 1);
    assert.deepEqual(await left(dir), []);
  });

  it("a fork still starting its copies keeps its file (from this and every other process) until it says it is done", async (t) => {
    if (!dir) return t.skip("no memory filesystem here");
    const path = await newForkMemoryPath(paths);
    assert.ok(path);
    await writeFile(path, "guest memory");
    assert.equal(await release(paths), 0);
    assert.ok((await readdir(dir)).some((n) => n.endsWith(".starting")));
    assert.ok((await readdir(dir)).includes(`fork-${process.pid}-${path.split("-").at(-1)}`));
    await finishForkMemory(path, backend);
    assert.deepEqual(await left(dir), []);
  });

  it("a fork whose writer died (kill -9) leaves neither its file nor its marker", async (t) => {
    if (!dir) return t.skip("no memory filesystem here");
    const stem = `fork-${deadPid()}-0123456789ab`;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, `${stem}.ram`), "half-written guest memory");
    await writeFile(join(dir, `.${stem}.starting`), "");
    assert.equal(await release(paths), 1);
    assert.deepEqual(await left(dir), []);
  });

  it("a home's fork directory exists only while it holds a fork: releasing makes none, the last file takes it along", async (t) => {
    if (!dir) return t.skip("no memory filesystem here");
    // Every delete, reset and stop releases: before, each made the directory, and every test home left one behind.
    assert.equal(await release(paths), 0);
    await assert.rejects(readdir(dir), { code: "ENOENT" });
    const path = await newForkMemoryPath(paths);
    assert.ok(path);
    await writeFile(path, "guest memory");
    await finishForkMemory(path, backend);
    await assert.rejects(readdir(dir), { code: "ENOENT" }, "the directory went with its last file");
  });
});
