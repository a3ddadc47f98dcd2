import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { processAlive } from "../src/process/process-alive.js";
import { processStartTime } from "../src/process/process-identity.js";
import { QemuBackend } from "../src/runtime/qemu/qemu-backend.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const QEMU = "/usr/bin/qemu-system-x86_64";
const backend = new QemuBackend({ qemuBinary: QEMU, accel: "tcg", tscKhz: undefined });

/**
 * A process that looks like one of our VMs to a /proc scan: argv[0] is QEMU's name and its argv names
 * `<runDir>/agent.sock`. `asNobody` starts it as another local user would.
 */
async function fakeVm(agentSocket: string, asNobody: boolean): Promise<ChildProcess> {
  // `sleep 60; :` keeps bash (with the spoofed argv) alive instead of exec'ing sleep.
  const script = `exec -a qemu-system-x86_64 bash -c 'sleep 60; :' x -chardev socket,id=agent,path=${agentSocket},server=on`;
  const child = asNobody
    ? spawn("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c", script], { stdio: "ignore" })
    : spawn("bash", ["-c", script], { stdio: "ignore" });
  for (let i = 0; i < 200; i++) {
    // Until the exec: before it, setpriv's and bash's own argv name the socket inside the script text.
    const argv = (await readFile(`/proc/${child.pid}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv[0] === "qemu-system-x86_64" && argv.some((a) => a.includes(`path=${agentSocket},`))) return child;
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill("SIGKILL");
  throw new Error("the fake VM process did not start");
}

describe("finding our VMs among host processes (another local user's processes are not ours)", () => {
  it("ignores a process owned by another user that names one of our run directories, and never removes that directory", async () => {
    await mkdir(testPaths.runtimeDir, { recursive: true });
    const runDir = join(testPaths.runtimeDir, "ws-ffffffffffffffffffff");
    await mkdir(runDir, { recursive: true });
    await writeFile(join(runDir, "canary"), "live workspace files");
    const spoof = await fakeVm(join(runDir, "agent.sock"), true);
    try {
      const found = await backend.findVms(testPaths.runtimeDir);
      assert.deepEqual(
        found.filter((vm) => vm.pid === spoof.pid),
        [],
        "another user's process is not one of our VMs",
      );
      assert.equal(await backend.isRunning({ pid: spoof.pid!, runDir }), false);
      // Even handed its pid directly, kill neither signals it nor deletes the directory it names.
      await assert.rejects(backend.kill({ pid: spoof.pid!, runDir }), /still names the run directory .* and is not ours/);
      assert.ok(processAlive(spoof.pid!));
      assert.equal(await readFile(join(runDir, "canary"), "utf8"), "live workspace files");
    } finally {
      spoof.kill("SIGKILL");
    }
  });

  it("takes only a run directory that is a direct child of the runtime directory: no `..`", async () => {
    await mkdir(testPaths.runtimeDir, { recursive: true });
    const escapes = [
      join(testPaths.runtimeDir, "..", "agent.sock"),
      `${testPaths.runtimeDir}/ws-ffffffffffffffffffff/../agent.sock`,
      `${testPaths.runtimeDir}/./agent.sock`,
    ];
    const spoofs = await Promise.all(escapes.map((socket) => fakeVm(socket, false)));
    const mine = await fakeVm(join(testPaths.runtimeDir, "ws-gggggggggggggggggggg", "agent.sock"), false);
    try {
      const found = await backend.findVms(testPaths.runtimeDir);
      for (const spoof of spoofs)
        assert.deepEqual(
          found.filter((vm) => vm.pid === spoof.pid),
          [],
          `${spoof.pid}`,
        );
      assert.deepEqual(
        found.filter((vm) => vm.pid === mine.pid),
        [{ pid: mine.pid, runDir: join(testPaths.runtimeDir, "ws-gggggggggggggggggggg") }],
        "our own process is found",
      );
      // Killing our own (now gone) process removes its run directory as before.
      await mkdir(join(testPaths.runtimeDir, "ws-gggggggggggggggggggg"));
      await backend.kill(found.find((vm) => vm.pid === mine.pid)!);
      assert.equal(existsSync(join(testPaths.runtimeDir, "ws-gggggggggggggggggggg")), false);
      assert.ok(existsSync(testPaths.runtimeDir));
    } finally {
      for (const child of [...spoofs, mine]) child.kill("SIGKILL");
    }
  });

  it("tells a VM from a later process under the same pid: the handle's start time must match", async () => {
    await mkdir(testPaths.runtimeDir, { recursive: true });
    const runDir = join(testPaths.runtimeDir, "ws-hhhhhhhhhhhhhhhhhhhh");
    await mkdir(runDir, { recursive: true });
    await writeFile(join(runDir, "canary"), "live workspace files");
    const vm = await fakeVm(join(runDir, "agent.sock"), false);
    try {
      const startTime = processStartTime(vm.pid!);
      assert.ok(startTime);
      assert.equal(await backend.isRunning({ pid: vm.pid!, runDir, startTime }), true);
      // The same pid, command line and run directory, but not the process the handle was made for.
      const stale = { pid: vm.pid!, runDir, startTime: String(Number(startTime) - 1) };
      assert.equal(await backend.isRunning(stale), false);
      await assert.rejects(backend.kill(stale), /still names the run directory .* and is not ours/);
      assert.ok(processAlive(vm.pid!), "not signalled");
      assert.equal(await readFile(join(runDir, "canary"), "utf8"), "live workspace files");
      // The right handle kills it and removes its run directory.
      await backend.kill({ pid: vm.pid!, runDir, startTime });
      assert.equal(processAlive(vm.pid!), false);
      assert.equal(existsSync(runDir), false);
    } finally {
      vm.kill("SIGKILL");
    }
  });
});
