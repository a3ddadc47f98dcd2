import { randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { processAlive } from "../process/process-alive.js";
import type { RunningVm, VmHandle } from "../runtime/vmm-backend.js";
import { workspaceLaunchSpec } from "./boot-templates.js";
import { nowIso, type WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import { launchNetwork } from "./workspace-network.js";
import { loadSecrets, materializeSecrets } from "./workspace-secrets.js";

/** How a workspace VM comes up: a cold boot of its disk, or a restore of saved state (template or snapshot). */
export type BootSource =
  | { kind: "cold" }
  | { kind: "restore"; statePath: string; diskPath: string; mode: "template_restore" | "snapshot_restore" };

export function diskPath(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "disk.qcow2");
}

/** Replaces the workspace's live disk with an empty overlay on `backing`. */
export async function layerDisk(ctx: WorkspaceContext, record: WorkspaceRecord, backing: string, format: "raw" | "qcow2"): Promise<void> {
  const disk = diskPath(ctx, record.id);
  await rm(disk, { force: true });
  await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["create", "-q", "-f", "qcow2", "-b", backing, "-F", format, disk], { privateFiles: true });
  record.disk_backing = backing;
}

/**
 * Starts the workspace's VM and records it. A failed restore falls back to a cold boot of the same
 * files, so a stale or incompatible saved state costs time, never data.
 */
export async function bootWorkspace(ctx: WorkspaceContext, record: WorkspaceRecord, source: BootSource): Promise<RunningVm> {
  const runtime = await ctx.runtime();
  const runDir = ctx.store.runDir(record.id);
  await rm(runDir, { recursive: true, force: true });
  const shape = { vcpuCount: record.vcpu_count, memMib: record.mem_mib };
  const network = await launchNetwork(ctx, record);
  let vm: RunningVm;
  let mode: "cold_boot" | "template_restore" | "snapshot_restore" = "cold_boot";
  if (source.kind === "restore") {
    await layerDisk(ctx, record, source.diskPath, "qcow2");
    try {
      vm = await runtime.backend.launch({ ...workspaceLaunchSpec(runtime, shape, diskPath(ctx, record.id), runDir, network), incomingState: source.statePath });
      mode = source.mode;
      // Every restored copy starts with the same RNG state; mix in fresh host entropy.
      await vm.agent.writeFile("/dev/urandom", randomBytes(64), { append: true });
    } catch {
      vm = await runtime.backend.launch(workspaceLaunchSpec(runtime, shape, diskPath(ctx, record.id), runDir, network));
    }
  } else {
    vm = await runtime.backend.launch(workspaceLaunchSpec(runtime, shape, diskPath(ctx, record.id), runDir, network));
  }
  // Secrets live in the guest's tmpfs, gone after a cold boot: put them back every time.
  await materializeSecrets(vm.agent, await loadSecrets(ctx, record.id));
  await republishPorts(record, vm);
  record.vm = { pid: vm.pid, run_dir: runDir, accel: vm.accel, started_at: nowIso(), boot_ms: vm.bootMs, start_mode: mode };
  record.unexpected_stop = null;
  record.updated_at = nowIso();
  return vm;
}

/**
 * Port forwards live in the VMM, not the guest: after a restore, re-publish the ports of services
 * the restored guest is running; services a cold boot lost keep no ports.
 */
async function republishPorts(record: WorkspaceRecord, vm: RunningVm): Promise<void> {
  const withPorts = Object.entries(record.services).filter(([, s]) => s.published.length);
  if (!withPorts.length) return;
  const { header } = await vm.agent.request("service.list");
  const running = new Set((header.services as { name: string; running: boolean }[]).filter((s) => s.running).map((s) => s.name));
  for (const [name, service] of withPorts) {
    if (!running.has(name)) {
      service.published = [];
      continue;
    }
    for (const p of service.published) await vm.addPortForward(p.host_port, p.guest_port);
  }
}

/** Kills a workspace VM by pid (any pyro process may do this) and waits until it is gone. */
export async function killWorkspaceVm(handle: VmHandle): Promise<void> {
  // The pid may have been reused since the record was written: only kill our own VMM.
  const cmdline = await readFile(`/proc/${handle.pid}/cmdline`, "utf8").catch(() => "");
  if (cmdline.includes(handle.runDir)) {
    try {
      process.kill(handle.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 10_000;
  while (cmdline.includes(handle.runDir) && processAlive(handle.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await rm(handle.runDir, { recursive: true, force: true });
}

/**
 * Stops a VM gracefully: the guest syncs its disks and powers off; after `graceMs` it is killed.
 * Data is safe either way, because every pyro operation that writes syncs the guest first.
 */
export async function stopWorkspaceVm(vm: RunningVm, graceMs = 10_000): Promise<void> {
  try {
    await vm.agent.shutdown(5_000);
  } catch {
    // The guest is going away either way.
  }
  const handle = vm.detach();
  const deadline = Date.now() + graceMs;
  while (processAlive(handle.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await killWorkspaceVm(handle);
}
