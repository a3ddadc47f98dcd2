/**
 * The pieces a reset uses to replace a VM quickly, without a VM: killing the old VMM without
 * waiting for its exit (real processes that name a run directory as a VMM does), and waiting for a
 * QMP event instead of polling (a unix socket server playing QEMU's monitor).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { processAlive } from "../src/process/process-alive.js";
import { QemuBackend } from "../src/runtime/qemu/qemu-backend.js";
import { QmpClient } from "../src/runtime/qemu/qmp-client.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "pyro-teardown-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const backend = new QemuBackend({ qemuBinary: "qemu-system-x86_64", accel: "tcg", tscKhz: undefined });

/** A process whose command line names `runDir`'s agent socket, as a VMM serving it does. */
async function fakeVmm(runDir: string): Promise<ChildProcess> {
  await mkdir(runDir, { recursive: true });
  // `; :` keeps sh from exec'ing sleep, which would drop the arguments that name the run directory.
  const child = spawn("sh", ["-c", "sleep 60; :", "fake-vmm", `socket,id=agent,path=${runDir}/agent.sock,server=on`], { stdio: "ignore" });
  await new Promise((resolve) => child.once("spawn", resolve));
  return child;
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

describe("killInBackground: the old VMM goes while its successor starts", () => {
  it("returns once the signal is sent, settles `gone` at the exit, and leaves the run directory to the caller", async () => {
    const runDir = join(dir, "ws-a");
    const vmm = await fakeVmm(runDir);
    const exited = new Promise((resolve) => vmm.once("exit", resolve));
    const { gone } = await backend.killInBackground({ pid: vmm.pid!, runDir });
    await gone;
    await exited;
    assert.equal(processAlive(vmm.pid!), false, "the VMM still runs after `gone`");
    assert.equal(await exists(runDir), true, "the run directory is the caller's to remove (its successor may already use it)");
    // kill() does the same and removes the directory.
    const again = await fakeVmm(runDir);
    await backend.kill({ pid: again.pid!, runDir });
    assert.equal(processAlive(again.pid!), false);
    assert.equal(await exists(runDir), false);
  });

  it("never signals a process that does not serve the run directory", async () => {
    const other = await fakeVmm(join(dir, "ws-other"));
    try {
      const { gone } = await backend.killInBackground({ pid: other.pid!, runDir: join(dir, "ws-b") });
      await gone;
      assert.equal(processAlive(other.pid!), true, "a process serving another run directory was killed");
    } finally {
      other.kill("SIGKILL");
    }
  });
});

/** A forged QEMU monitor: greets, answers every command, and runs `onCommand` for each. */
async function fakeMonitor(onCommand: (command: string, socket: Socket) => void): Promise<{ path: string; server: Server }> {
  const path = join(dir, `qmp-${Math.random().toString(36).slice(2)}.sock`);
  const server = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.write(`${JSON.stringify({ QMP: { version: {}, capabilities: [] } })}\n`);
    let buffer = "";
    socket.on("data", (chunk) => {
      buffer += chunk.toString();
      for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
        const command = (JSON.parse(buffer.slice(0, nl)) as { execute: string }).execute;
        buffer = buffer.slice(nl + 1);
        onCommand(command, socket);
        socket.write(`${JSON.stringify({ return: {} })}\n`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server };
}

const migrationEvent = (status: string) => `${JSON.stringify({ event: "MIGRATION", data: { status }, timestamp: {} })}\n`;
const migrationEnded = (e: { event: string; data: Record<string, unknown> }) => e.event === "MIGRATION" && e.data.status === "completed";

describe("QmpClient.nextEvent", () => {
  it("resolves with the first matching event, passing over others and command replies", async () => {
    const { path, server } = await fakeMonitor((command, socket) => {
      // Events interleaved with the reply, as QEMU sends them.
      if (command === "migrate-incoming") socket.write(migrationEvent("setup") + migrationEvent("active") + migrationEvent("completed"));
    });
    const qmp = await QmpClient.connect(path, Date.now() + 2_000);
    try {
      const ended = qmp.nextEvent(migrationEnded, Date.now() + 2_000);
      await qmp.execute("migrate-incoming", { uri: "fd:3" });
      assert.deepEqual((await ended).data, { status: "completed" });
      // Replies still pair with their commands after events went by.
      assert.deepEqual(await qmp.execute("cont"), {});
    } finally {
      qmp.close();
      server.close();
    }
  });

  it("rejects at its deadline, and when the monitor goes away", async () => {
    const { path, server } = await fakeMonitor(() => undefined);
    const qmp = await QmpClient.connect(path, Date.now() + 2_000);
    try {
      await assert.rejects(qmp.nextEvent(migrationEnded, Date.now() + 50), /did not send the awaited event/);
      const pending = qmp.nextEvent(migrationEnded, Date.now() + 10_000);
      qmp.close();
      await assert.rejects(pending, /monitor connection closed/);
    } finally {
      server.close();
    }
  });
});
