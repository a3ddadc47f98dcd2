import { rm } from "node:fs/promises";
import type { RunningVm, VmLaunchSpec } from "../runtime/vmm-backend.js";
import { giveVmItsOwnIdentity } from "../runtime/vm-identity.js";
import { templateMemoryMode, type TemplateMemoryMode, workspaceLaunchSpec } from "./boot-templates.js";
import { replaceWithOverlay } from "./disk-chain.js";
import { removeStaleStaging } from "./guest-transfer.js";
import type { WorkspaceContext } from "./workspace-context.js";
import { nowIso, type WorkspaceRecord } from "./workspace-record.js";
import { diskPath, workspaceDiskPath } from "./workspace-disk-files.js";
import { launchNetwork } from "./workspace-network.js";
import { loadSecrets, materializeSecrets } from "./workspace-secrets.js";
import { installGuestCa, interceptsTls } from "./scoped-secrets.js";

/** How a workspace VM comes up: a cold boot of its disk, or a restore of saved state (template or snapshot). */
export type BootSource =
  | { kind: "cold" }
  | {
      kind: "restore";
      statePath: string;
      diskPath: string;
      mode: "template_restore" | "snapshot_restore" | "fork_restore";
      memoryPath?: string;
      workspaceDiskPath?: string;
    };

/** Replaces the live /workspace disk with an empty overlay on `backing` (atomically). */
export async function layerWorkspaceDisk(ctx: WorkspaceContext, record: WorkspaceRecord, backing: string, format: "raw" | "qcow2"): Promise<void> {
  await replaceWithOverlay(workspaceDiskPath(ctx, record.id), backing, format);
}

/** The machine a workspace runs as: its shape and, where it has one, its /workspace disk. */
function launchSpec(
  ctx: WorkspaceContext,
  record: WorkspaceRecord,
  runtime: Awaited<ReturnType<WorkspaceContext["runtime"]>>,
  runDir: string,
  memory: TemplateMemoryMode,
  network: VmLaunchSpec["network"],
): VmLaunchSpec {
  const shape = { vcpuCount: record.vcpu_count, memMib: record.mem_mib, ...(record.disk_gib !== null ? { diskGib: record.disk_gib } : {}) };
  const spec = workspaceLaunchSpec(
    runtime,
    shape,
    diskPath(ctx, record.id),
    { path: workspaceDiskPath(ctx, record.id), format: "qcow2" },
    runDir,
    memory,
    network,
  );
  if (record.disk_gib === null) delete spec.workspaceDisk; // created before /workspace had its own disk
  return spec;
}

/** Replaces the workspace's live disk with an empty overlay on `backing` (atomically). */
export async function layerDisk(ctx: WorkspaceContext, record: WorkspaceRecord, backing: string, format: "raw" | "qcow2"): Promise<void> {
  await replaceWithOverlay(diskPath(ctx, record.id), backing, format);
}

/**
 * Starts the workspace's VM and records it. A failed restore falls back to a cold boot of the same
 * files, so a stale or incompatible saved state costs time, never data.
 */
export async function bootWorkspace(ctx: WorkspaceContext, record: WorkspaceRecord, source: BootSource): Promise<RunningVm> {
  const runtime = await ctx.runtime();
  const runDir = ctx.store.runDir(record.id);
  await rm(runDir, { recursive: true, force: true });
  const network = await launchNetwork(ctx, record);
  const memory = await templateMemoryMode(ctx.paths);
  let vm: RunningVm;
  let mode: "cold_boot" | "template_restore" | "snapshot_restore" | "fork_restore" = "cold_boot";
  if (source.kind === "restore") {
    await layerDisk(ctx, record, source.diskPath, "qcow2");
    if (source.workspaceDiskPath) await layerWorkspaceDisk(ctx, record, source.workspaceDiskPath, "qcow2");
    let restored: RunningVm | undefined;
    try {
      // A template's (fork's, snapshot's) RAM file is mapped copy-on-write: the VM shares the pages it never writes.
      const memoryFile = source.memoryPath ? { memoryFile: { path: source.memoryPath, share: false } } : {};
      restored = await runtime.backend.launch({ ...launchSpec(ctx, record, runtime, runDir, memory, network), incomingState: source.statePath, ...memoryFile });
      mode = source.mode;
      await giveVmItsOwnIdentity(restored, record.id);
      vm = restored;
    } catch {
      // The restored guest (saved from one a user ran: hostile) did not answer: it goes before its run directory is reused.
      await restored?.dispose();
      mode = "cold_boot";
      vm = await runtime.backend.launch(launchSpec(ctx, record, runtime, runDir, memory, network));
      await giveVmItsOwnIdentity(vm, record.id);
    }
  } else {
    vm = await runtime.backend.launch(launchSpec(ctx, record, runtime, runDir, memory, network));
    // The disk came from a shared image (or template): its machine-id is every other VM's too.
    await giveVmItsOwnIdentity(vm, record.id);
  }
  try {
    // A template's guest never mounted its placeholder; a snapshot's guest has /workspace mounted already.
    if (record.disk_gib !== null) await mountWorkspaceDisk(vm);
    // Secrets live in the guest's tmpfs, gone after a cold boot: put them back every time.
    await materializeSecrets(vm.agent, await loadSecrets(ctx, record.id));
    if (interceptsTls(record)) await installGuestCa(vm.agent, ctx.store.dir(record.id));
    if (record.guest_cleanup_pending) {
      await removeStaleStaging(vm.agent);
      record.guest_cleanup_pending = false;
    }
    await republishPorts(record, vm);
  } catch (error) {
    // The caller never gets this VM, so it cannot stop it: a restored guest that refuses these steps would outlive the call.
    await vm.dispose();
    throw error;
  }
  record.vm = { pid: vm.pid, pid_start: vm.startTime ?? null, run_dir: runDir, accel: vm.accel, started_at: nowIso(), boot_ms: vm.bootMs, start_mode: mode };
  record.unexpected_stop = null;
  record.updated_at = nowIso();
  return vm;
}

async function mountWorkspaceDisk(vm: RunningVm): Promise<void> {
  try {
    await vm.agent.mountWorkspace(60_000);
  } catch (error) {
    await vm.dispose(); // the agent's message names the device and why the mount failed
    throw error;
  }
}

/**
 * Port forwards live in the VMM, not the guest: after a restore, re-publish the ports of services
 * the restored guest is running; services a cold boot lost keep no ports.
 */
async function republishPorts(record: WorkspaceRecord, vm: RunningVm): Promise<void> {
  const withPorts = Object.entries(record.services).filter(([, s]) => s.published.length);
  if (!withPorts.length) return;
  const running = new Set((await vm.agent.serviceList()).filter((s) => s.running).map((s) => s.name));
  for (const [name, service] of withPorts) {
    if (!running.has(name)) {
      service.published = [];
      continue;
    }
    for (const p of service.published) await vm.addPortForward(p.host_port, p.guest_port);
  }
}
