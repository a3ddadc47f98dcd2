/**
 * A guest (the attacker here) cannot make the host keep unbounded data: its serial console ends
 * in a fixed-size ring in QEMU, whether it booted cold or was restored, with no pyro process
 * watching; its disk overlay grows only with the distinct blocks it writes, up to the disk's size.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { CONSOLE_CHARDEV_ID, CONSOLE_RING_BYTES, runFiles } from "../src/runtime/qemu/qemu-args.js";
import { QmpClient } from "../src/runtime/qemu/qmp-client.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };
const MiB = 1024 * 1024;

function runDirOf(id: string): string {
  return join(testPaths.runtimeDir, id);
}

async function consoleFileBytes(id: string): Promise<number> {
  return (await stat(runFiles(runDirOf(id)).console)).size;
}

/** The guest writes `bytes` of 'A' to its serial port, far more than the ring holds. */
async function floodConsole(id: string, bytes: number): Promise<void> {
  const r = await pyro.execWorkspace(id, ["sh", "-c", `head -c ${bytes} /dev/zero | tr '\\0' A > /dev/ttyS0`], { timeoutSeconds: 120 });
  assert.equal(r.exit_code, 0, r.stderr);
}

/** Drains the console ring over QMP, as an operator would read it. */
async function readRing(id: string): Promise<Buffer> {
  const qmp = await QmpClient.connect(runFiles(runDirOf(id)).qmpSocket, Date.now() + 10_000);
  try {
    const data = await qmp.execute("ringbuf-read", { device: CONSOLE_CHARDEV_ID, size: 4 * CONSOLE_RING_BYTES, format: "base64" });
    return Buffer.from(String(data), "base64");
  } finally {
    qmp.close();
  }
}

async function assertConsoleBounded(id: string, floodBytes: number, how: string): Promise<void> {
  const before = await consoleFileBytes(id);
  await floodConsole(id, floodBytes);
  assert.equal(await consoleFileBytes(id), before, `${how}: the console file did not grow`);
  assert.ok(before <= CONSOLE_RING_BYTES, `${how}: boot output ${before} bytes`);
  const ring = await readRing(id);
  assert.equal(ring.length, CONSOLE_RING_BYTES, `${how}: the ring is full and no bigger`);
  assert.ok(
    ring.subarray(-4096).every((b) => b === 0x41),
    `${how}: the ring holds the newest bytes`,
  );
}

describe("[vm] guest resource bounds", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("caps the console of restored and cold-booted workspaces; the file stops at the boot output", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    assert.equal(ws.vm?.start_mode, "template_restore");
    // A restored guest never writes to the file: the ring is in place before it resumes.
    assert.equal(await consoleFileBytes(ws.workspace_id), 0);
    await assertConsoleBounded(ws.workspace_id, 2 * CONSOLE_RING_BYTES, "template restore");

    // The baseline is the template itself: reset to it restores the template again.
    const reset = await pyro.resetWorkspace(ws.workspace_id);
    assert.equal(reset.start_mode, "template_restore");
    await assertConsoleBounded(ws.workspace_id, CONSOLE_RING_BYTES + 200_000, "reset to the baseline");
    await pyro.createSnapshot(ws.workspace_id, "named");
    const restored = await pyro.resetWorkspace(ws.workspace_id, { snapshot: "named" });
    assert.equal(restored.start_mode, "snapshot_restore");
    await assertConsoleBounded(ws.workspace_id, CONSOLE_RING_BYTES + 200_000, "snapshot restore");

    await pyro.stopWorkspace(ws.workspace_id);
    const started = await pyro.startWorkspace(ws.workspace_id);
    assert.equal(started.vm?.start_mode, "cold_boot");
    const bootLog = await consoleFileBytes(ws.workspace_id);
    assert.ok(bootLog > 0, "a cold boot logs to the file until the agent answers");
    await assertConsoleBounded(ws.workspace_id, CONSOLE_RING_BYTES + 200_000, "cold boot");
  });

  it("reports the host disk a workspace uses; rewrites do not grow it past the disk's size", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    const initial = await pyro.statusWorkspace(ws.workspace_id);
    assert.ok(initial.disk_used_bytes > 0, "the overlay, baseline snapshot and memory image take space");

    const write = (flags: string) =>
      pyro.execWorkspace(ws.workspace_id, ["sh", "-c", `dd if=/dev/zero of=/workspace/big bs=1M count=64 ${flags} 2>/dev/null && sync`], {
        timeoutSeconds: 120,
      });
    assert.equal((await write("conv=fsync")).exit_code, 0);
    const grown = (await pyro.statusWorkspace(ws.workspace_id)).disk_used_bytes;
    assert.ok(grown - initial.disk_used_bytes >= 64 * MiB, `64 MiB written: ${initial.disk_used_bytes} → ${grown}`);

    // Overwriting the same blocks reuses the overlay's clusters.
    for (let i = 0; i < 2; i++) assert.equal((await write("conv=notrunc,fsync")).exit_code, 0);
    const rewritten = (await pyro.statusWorkspace(ws.workspace_id)).disk_used_bytes;
    assert.ok(rewritten - grown < 8 * MiB, `rewrites added ${rewritten - grown} bytes`);

    // The guest's disk is exactly the overlay's virtual size: the most it can ever address.
    const disk = join(testPaths.stateDir, "workspaces", ws.workspace_id, "disk.qcow2");
    const info = spawnSync("qemu-img", ["info", "-U", "--output=json", disk], { encoding: "utf8" });
    const virtualSize = JSON.parse(info.stdout)["virtual-size"] as number;
    const guest = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo $(( $(cat /sys/block/vda/size) * 512 ))"]);
    assert.equal(Number(guest.stdout.trim()), virtualSize);
    const beyond = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", `dd if=/dev/zero of=/dev/vda bs=512 count=1 seek=$(cat /sys/block/vda/size) 2>&1`]);
    assert.notEqual(beyond.exit_code, 0, `writing past the end of the disk must fail: ${beyond.stdout}`);
  });
});
