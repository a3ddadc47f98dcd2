import { chmod, rm } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import { makePrivateSubdir, PRIVATE_FILE_MODE } from "../storage/private-storage.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import type { RunningVm, SavedMemory } from "../runtime/vmm-backend.js";
import { templateByName, type BootTemplate } from "./boot-templates.js";
import { backingChain } from "./disk-chain.js";
import { releaseUnmappedForkMemory } from "./fork-memory.js";
import { copyMountedWorkspaceDisk, type MountedBaseline, mountedBaselineFor } from "./mounted-baseline.js";
import { bootWorkspace, layerDisk, layerWorkspaceDisk } from "./workspace-boot.js";
import { diskPath, seedImagePath, workspaceDiskPath } from "./workspace-disk-files.js";
import { nowIso, reconcileVm, vmHandle, withLockedWorkspace, withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import type { SnapshotRecord, WorkspaceRecord } from "./workspace-record.js";
import { validateName } from "./workspace-store.js";

export const BASELINE_SNAPSHOT = "baseline";
const WORKSPACE_DISK_FILE = "workspace.qcow2";

/**
 * The baseline of a workspace restored from a boot template: the template itself plus the seed
 * image. Nothing is saved at create, so create streams no memory, and reset takes the same path as
 * create.
 */
export function templateBaseline(template: BootTemplate): SnapshotRecord {
  return { name: BASELINE_SNAPSHOT, created_at: nowIso(), state_file: "", disk_file: "", template: template.name };
}

/** Restores a template baseline: the template's memory, an empty overlay on its disk and a fresh one on the seed image. */
async function restoreTemplateBaseline(ctx: WorkspaceContext, record: WorkspaceRecord, templateName: string): Promise<RunningVm> {
  const found = await templateByName(ctx.paths, templateName);
  if (!found) {
    throw new PyroError(
      "SNAPSHOT_NOT_FOUND",
      `the boot template ${templateName} that workspace ${record.id} was created from is gone from the cache; its baseline cannot be restored (create a new workspace)`,
    );
  }
  const { template, restorable } = found;
  const seed = seedImagePath(ctx, record.id);
  const mounted = restorable ? await mountedBaseline(ctx, record, template) : undefined;
  // Its /workspace is mounted in the memory restored: the disk is the overlay that mount wrote.
  if (mounted && (await copyMountedWorkspaceDisk(mounted, workspaceDiskPath(ctx, record.id), seed))) {
    return bootWorkspace(ctx, record, {
      kind: "restore",
      statePath: mounted.statePath,
      diskPath: template.diskPath,
      mode: "template_restore",
      memoryPath: mounted.memoryPath,
    });
  }
  await layerWorkspaceDisk(ctx, record, seed, "raw");
  if (restorable) {
    return bootWorkspace(ctx, record, {
      kind: "restore",
      statePath: template.statePath,
      diskPath: template.diskPath,
      mode: "template_restore",
      ...(template.memoryPath ? { memoryPath: template.memoryPath } : {}),
    });
  }
  // Its RAM file is gone (reboot, QEMU upgrade): the same disks, booted instead of resumed.
  await layerDisk(ctx, record, template.diskPath, "qcow2");
  return bootWorkspace(ctx, record, { kind: "cold" });
}

/** The template's mounted baseline, for a workspace without a NIC whose /workspace disk is the shared empty image. */
async function mountedBaseline(ctx: WorkspaceContext, record: WorkspaceRecord, template: BootTemplate): Promise<MountedBaseline | undefined> {
  if (record.disk_gib === null || record.network_policy !== "off") return undefined;
  const shape = { vcpuCount: record.vcpu_count, memMib: record.mem_mib, diskGib: record.disk_gib };
  return mountedBaselineFor(ctx.paths, await ctx.runtime(), template, shape, seedImagePath(ctx, record.id));
}

function snapshotDir(ctx: WorkspaceContext, id: string, name: string): string {
  return join(ctx.store.dir(id), "snapshots", name);
}

/** A snapshot's disk copies: the root disk's and, where the workspace has one, the /workspace disk's. */
function snapshotDisks(ctx: WorkspaceContext, id: string, snapshot: SnapshotRecord): string[] {
  const dir = snapshotDir(ctx, id, snapshot.name);
  return [join(dir, snapshot.disk_file), ...(snapshot.workspace_disk_file ? [join(dir, snapshot.workspace_disk_file)] : [])];
}

export interface SnapshotView {
  name: string;
  created_at: string;
}

/** A snapshot's guest RAM, where it is kept as a file (see SnapshotRecord.memory_file). */
const SNAPSHOT_MEMORY_FILE = "memory.ram";

/**
 * Saves the running VM and a copy of its disk overlays while it is paused: a consistent point to
 * reset to. Where the VM's RAM is a mapped file (restored from a template, fork or snapshot), the
 * RAM goes to its own sparse file beside the device state and a reset maps it copy-on-write
 * instead of loading it; otherwise all memory is streamed into the state file.
 */
export async function saveSnapshot(ctx: WorkspaceContext, record: WorkspaceRecord, vm: RunningVm, name: string): Promise<SnapshotRecord> {
  const dir = snapshotDir(ctx, record.id, name);
  await rm(dir, { recursive: true, force: true });
  await makePrivateSubdir(dir);
  let memory: SavedMemory;
  try {
    await vm.agent.sync();
    memory = await vm.saveMappedState(join(dir, "state.bin"), join(dir, SNAPSHOT_MEMORY_FILE));
    // Guest memory (secrets in its tmpfs included) is in these files: owner-only.
    await chmod(join(dir, "state.bin"), PRIVATE_FILE_MODE);
    if (memory.kind === "mapped") await chmod(memory.memoryPath, PRIVATE_FILE_MODE);
    try {
      // Both disks while paused: the /workspace overlay is as consistent with the memory as the root one.
      await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", diskPath(ctx, record.id), join(dir, "disk.qcow2")], {
        privateFiles: true,
      });
      if (record.disk_gib !== null)
        await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", workspaceDiskPath(ctx, record.id), join(dir, WORKSPACE_DISK_FILE)], {
          privateFiles: true,
        });
    } finally {
      await vm.resume();
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    name,
    created_at: nowIso(),
    state_file: "state.bin",
    disk_file: "disk.qcow2",
    ...(record.disk_gib !== null ? { workspace_disk_file: WORKSPACE_DISK_FILE } : {}),
    ...(memory.kind === "mapped" ? { memory_file: SNAPSHOT_MEMORY_FILE } : {}),
  };
}

export async function createSnapshot(ctx: WorkspaceContext, ref: string, name: string): Promise<SnapshotView & { workspace_id: string }> {
  validateName(name);
  if (name === BASELINE_SNAPSHOT) throw new PyroError("INVALID_ARGUMENT", `'${BASELINE_SNAPSHOT}' is reserved for the state captured at create`);
  return withRunningWorkspace(
    ctx,
    ref,
    async (record, vm) => {
      if (record.snapshots.some((s) => s.name === name)) throw new PyroError("INVALID_ARGUMENT", `workspace ${record.id} already has a snapshot '${name}'`);
      const snapshot = await saveSnapshot(ctx, record, vm, name);
      record.snapshots.push(snapshot);
      record.updated_at = nowIso();
      await ctx.store.write(record);
      return { workspace_id: record.id, name, created_at: snapshot.created_at };
    },
    "snapshot create",
  );
}

export async function listSnapshots(ctx: WorkspaceContext, ref: string): Promise<{ workspace_id: string; count: number; snapshots: SnapshotView[] }> {
  await ctx.recoverInterrupted();
  const record = await ctx.store.resolve(ref);
  return { workspace_id: record.id, count: record.snapshots.length, snapshots: record.snapshots.map(({ name, created_at }) => ({ name, created_at })) };
}

export async function deleteSnapshot(ctx: WorkspaceContext, ref: string, name: string): Promise<{ workspace_id: string; deleted: string }> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      if (name === BASELINE_SNAPSHOT)
        throw new PyroError("INVALID_ARGUMENT", "the baseline snapshot cannot be deleted; it is what 'reset' and 'diff' compare against");
      const snapshot = record.snapshots.find((s) => s.name === name);
      if (!snapshot)
        throw new PyroError("SNAPSHOT_NOT_FOUND", `workspace ${record.id} has no snapshot '${name}'; see 'pyro workspace snapshot list ${record.id}'`);
      const disks = snapshotDisks(ctx, record.id, snapshot);
      // Disks layer on each other: one that others build on cannot go without losing their data.
      // Which ones do is read from the images (not remembered), so an interrupted reset cannot make it wrong.
      const layered = [
        { what: "the current disk", path: diskPath(ctx, record.id) },
        ...(record.disk_gib !== null ? [{ what: "the current disk", path: workspaceDiskPath(ctx, record.id) }] : []),
        ...record.snapshots
          .filter((s) => s.name !== name && !s.template)
          .flatMap((s) => snapshotDisks(ctx, record.id, s).map((path) => ({ what: `snapshot '${s.name}'`, path }))),
      ];
      const dependents = new Set<string>();
      for (const { what, path } of layered) if ((await backingChain(path)).some((layer) => disks.includes(layer))) dependents.add(what);
      if (dependents.size) {
        throw new PyroError("INVALID_ARGUMENT", `snapshot '${name}' is the base of ${[...dependents].join(" and ")}; reset to another snapshot first`);
      }
      await rm(snapshotDir(ctx, record.id, name), { recursive: true, force: true });
      record.snapshots = record.snapshots.filter((s) => s.name !== name);
      record.updated_at = nowIso();
      await ctx.store.write(record);
      return { workspace_id: record.id, deleted: name };
    },
    "snapshot delete",
  );
}

/**
 * Puts the workspace back to a snapshot (default: the baseline captured at create): the VM is
 * replaced by a restore of the snapshot's memory and disk. Command history is kept.
 */
export async function resetWorkspace(
  ctx: WorkspaceContext,
  ref: string,
  name = BASELINE_SNAPSHOT,
): Promise<{ workspace_id: string; snapshot: string; reset_ms: number; start_mode: string }> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      const started = Date.now();
      const snapshot = record.snapshots.find((s) => s.name === name);
      if (!snapshot)
        throw new PyroError("SNAPSHOT_NOT_FOUND", `workspace ${record.id} has no snapshot '${name}'; see 'pyro workspace snapshot list ${record.id}'`);
      const handle = vmHandle(record);
      const runtime = await ctx.runtime();
      // Killed, not waited for: the kernel tears the old VMM down (tens of ms under load) while its
      // successor starts. Nothing it could still write reaches the new VM: both disks are replaced
      // by new files, and a process sent SIGKILL runs no more code. With a NIC it holds the host
      // ports its successor publishes again: wait then.
      const old = handle && (await reconcileVm(ctx, record)) ? await runtime.backend.killInBackground(handle) : undefined;
      if (old && record.network_policy !== "off") await old.gone;
      // Recorded before the disk changes: a crash from here on leaves a stopped workspace, truthfully.
      record.vm = null;
      record.updated_at = nowIso();
      await ctx.store.write(record);
      const dir = snapshotDir(ctx, record.id, name);
      const workspaceDisk = snapshot.workspace_disk_file ? { workspaceDiskPath: join(dir, snapshot.workspace_disk_file) } : {};
      let vm: RunningVm;
      try {
        vm = snapshot.template
          ? await restoreTemplateBaseline(ctx, record, snapshot.template)
          : await bootWorkspace(ctx, record, {
              kind: "restore",
              statePath: join(dir, snapshot.state_file),
              diskPath: join(dir, snapshot.disk_file),
              mode: "snapshot_restore",
              ...workspaceDisk,
              ...(snapshot.memory_file ? { memoryPath: join(dir, snapshot.memory_file) } : {}),
            });
      } catch (error) {
        await old?.gone.catch(() => undefined);
        throw error;
      }
      try {
        await old?.gone;
      } catch (error) {
        // The old VMM would not die: two VMs must not run as this workspace.
        await vm.dispose();
        throw error;
      }
      vm.detach();
      record.last_activity_at = record.updated_at = nowIso();
      await ctx.store.write(record);
      // The VM it replaced may have been the last to map a fork's RAM file.
      if (handle) await releaseUnmappedForkMemory(ctx.paths, async () => runtime.backend);
      return { workspace_id: record.id, snapshot: name, reset_ms: Date.now() - started, start_mode: record.vm!.start_mode };
    },
    "reset",
  );
}
