import { existsSync, readdirSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { processAlive } from "../process/process-alive.js";
import { pathExists } from "../storage/path-exists.js";
import { deadHolder, lockHolder, sweepLockScratch, UNNAMED_PURPOSE, type LockOwner } from "../storage/process-lock.js";
import type { WorkspaceContext } from "./workspace-context.js";
import { nowIso, vmHandle } from "./workspace-record.js";
import { WORKSPACE_ID } from "./workspace-store.js";

/**
 * Crash recovery. Every workspace operation holds the workspace's lock, and the lock names its
 * holder (pid + start time) and what it was doing; a lock whose holder is dead therefore marks an
 * operation cut short (kill -9, OOM, host reboot). The next pyro command that comes by repairs
 * what such an operation can leave, says what it did, and records it in the workspace's status:
 * a VM no record owns, a VM left paused, a half-written snapshot, a workspace without a committed
 * record (and its secrets), temp files on the host and staging files in the guest.
 */

const DELETED_DIR = /^\.deleted-ws-[a-z2-7]+-(\d+)$/;
const LOCK_DIR = /^(ws-[a-z2-7]+)\.lock$/;

/**
 * Files and folders in a workspace directory that only exist while an operation runs;
 * `partialOverlays` are the names of its disks' half-made overlays.
 */
function isOperationScratch(name: string, partialOverlays: readonly string[]): boolean {
  return /^\..+\.tmp$/.test(name) || name.startsWith(".disk-") || name.startsWith(".seed-") || name.startsWith(".fork-") || partialOverlays.includes(name);
}

function listOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function describe(interrupted: LockOwner | undefined): string {
  if (!interrupted) return "an interrupted pyro operation";
  return interrupted.purpose === UNNAMED_PURPOSE
    ? `an interrupted pyro operation (pid ${interrupted.pid})`
    : `an interrupted '${interrupted.purpose}' (pyro pid ${interrupted.pid})`;
}

/**
 * Repairs one workspace after an interrupted operation. Call only while holding its lock.
 * Idempotent: running it on a healthy workspace changes nothing but the recovery note.
 */
export async function recoverWorkspace(ctx: WorkspaceContext, id: string, interrupted: LockOwner | undefined): Promise<string[]> {
  // Loaded here, not up front: the sweep below runs before most workspace commands, repairs are rare.
  const [{ partialOverlayPath }, { diskPath, workspaceDiskPath }, { removeStaleStaging }] = await Promise.all([
    import("./disk-chain.js"),
    import("./workspace-disk-files.js"),
    import("./guest-transfer.js"),
  ]);
  // The VMM backend only when there may be a VM: a VM always has its run directory.
  const backend = () => ctx.vms();
  const dir = ctx.store.dir(id);
  const record = await ctx.store.read(id);
  const notes: string[] = [];
  const runDir = ctx.store.runDir(id);
  const strays = (await pathExists(runDir))
    ? (await (await backend()).findVms(ctx.paths.runtimeDir)).filter((vm) => vm.runDir === runDir && vm.pid !== record?.vm?.pid)
    : [];
  if (!record) {
    // A record that exists but does not validate may be a newer pyro's: never delete what we cannot read.
    if (await pathExists(ctx.store.recordPath(id))) return notes;
    for (const vm of strays) await (await backend()).kill(vm);
    await ctx.store.remove(id);
    const vms = strays.length ? ` and stopped its VM (pid ${strays.map((v) => v.pid).join(", ")})` : "";
    notes.push(`workspace ${id} was left half-created or half-deleted by ${describe(interrupted)}: removed its files (disk and secrets included)${vms}`);
    for (const note of notes) ctx.notice(note);
    return notes;
  }
  for (const vm of strays) {
    await (await backend()).kill(vm);
    notes.push(`stopped a VM (pid ${vm.pid}) that no record owned`);
  }
  const handle = vmHandle(record);
  if (handle && !(await (await backend()).isRunning(handle))) {
    record.vm = null;
    record.unexpected_stop = `the VM (pid ${handle.pid}) was stopped by ${describe(interrupted)}; files written before are kept — start it again with 'pyro workspace start ${id}'`;
    notes.push("its VM was not running: recorded as stopped");
  } else if (handle && (await (await backend()).resumeIfPaused(handle).catch(() => false))) {
    notes.push("resumed its VM, which was left paused");
  }
  const known = new Set(record.snapshots.map((s) => s.name));
  for (const name of await readdir(join(dir, "snapshots")).catch(() => [] as string[])) {
    if (known.has(name)) continue;
    await rm(join(dir, "snapshots", name), { recursive: true, force: true });
    notes.push(`removed the incomplete snapshot '${name}'`);
  }
  let scratch = 0;
  const partialOverlays = [diskPath(ctx, id), workspaceDiskPath(ctx, id)].map((disk) => basename(partialOverlayPath(disk)));
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!isOperationScratch(name, partialOverlays)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    scratch++;
  }
  if (scratch) notes.push(`removed ${scratch} temporary file(s) from its state directory`);
  // Found by the sweep without a dead holder (a VM no record owned): nothing else can be half-done.
  if (!interrupted && !notes.length) return notes;
  // Any operation may have been uploading: sweep the guest's staging files now or at its next boot.
  if (interrupted) record.guest_cleanup_pending = true;
  if (record.vm && record.guest_cleanup_pending) {
    try {
      const vm = await (await backend()).attach(vmHandle(record)!, 15_000);
      try {
        await removeStaleStaging(vm.agent);
        record.guest_cleanup_pending = false;
      } finally {
        vm.detach();
      }
    } catch {
      // The guest does not answer now; the next operation that reaches it sweeps.
    }
  }
  const summary = notes.length ? notes.join("; ") : "nothing was left half-done";
  record.recovery = `${nowIso()} recovered from ${describe(interrupted)}: ${summary}`;
  record.updated_at = nowIso();
  await ctx.store.write(record);
  ctx.notice(`workspace ${id}: recovered from ${describe(interrupted)}: ${summary}`);
  return notes;
}

/** How long a process's sweep serves its next operations on one workspace (WorkspaceContext.recoverInterruptedIfDue). */
export const SWEEP_REUSE_MS = 1_000;

/**
 * Finds and repairs what interrupted operations left anywhere in this state directory. Cheap when
 * there is nothing to do (a directory listing, a few stats, a /proc scan when VMs exist); a
 * workspace busy in a live process is left to that process.
 */
export async function recoverInterrupted(ctx: WorkspaceContext): Promise<void> {
  const root = ctx.store.rootDir;
  // Most workspace commands start here, so the common case (nothing to repair) reads the
  // directories and lock records synchronously: through the thread pool each read was a round of
  // thread wake-ups, which a loaded host makes slow.
  const names = listOrEmpty(root);
  await sweepLockScratch(root);
  const ids = new Set(names.filter((n) => WORKSPACE_ID.test(n)));
  const suspects = new Set<string>();
  for (const name of names) {
    const deleted = DELETED_DIR.exec(name);
    if (deleted && !processAlive(Number(deleted[1]))) await rm(join(root, name), { recursive: true, force: true });
    const lock = LOCK_DIR.exec(name);
    // A lock without a workspace: a delete (or a create before its first file) that was cut short.
    if (lock && !ids.has(lock[1]!) && !(await lockHolder(join(root, name)))) await rm(join(root, name), { recursive: true, force: true });
  }
  for (const id of ids) {
    if ((await deadHolder(ctx.store.lockPath(id))) || !existsSync(ctx.store.recordPath(id))) suspects.add(id);
  }
  const runDirs = listOrEmpty(ctx.paths.runtimeDir).filter((n) => WORKSPACE_ID.test(n));
  if (runDirs.length) {
    const backend = await ctx.vms();
    // One-shot and template VMs die with the process that started them: only workspaces' count.
    const workspaceVms = (await backend.findVms(ctx.paths.runtimeDir)).filter((vm) => WORKSPACE_ID.test(basename(vm.runDir)));
    // Their records are read side by side: one after another, 30 held workspaces cost every
    // command ~15 ms here.
    const records = await Promise.all(workspaceVms.map((vm) => (ids.has(basename(vm.runDir)) ? ctx.store.read(basename(vm.runDir)) : undefined)));
    workspaceVms.forEach((vm, i) => {
      if (records[i]?.vm?.pid !== vm.pid) suspects.add(basename(vm.runDir));
    });
  }
  // A workspace held by a live process (a create under way, one made ahead and kept warm) is that
  // process's to finish: its lock would only answer busy, and the fork-memory sweep below need not run.
  for (const id of suspects) if (await lockHolder(ctx.store.lockPath(id))) suspects.delete(id);
  for (const id of suspects) {
    await ctx.store
      .tryWithLock(id, "recovery", (interrupted) => recoverWorkspace(ctx, id, interrupted))
      .catch((error: Error) => {
        ctx.notice(`workspace ${id}: recovery from an interrupted operation failed: ${error.message}`);
      });
  }
  // A fork cut short may have left a RAM file that no VM maps (tmpfs would hold it until reboot).
  if (suspects.size) {
    const { releaseUnmappedForkMemory } = await import("./fork-memory.js");
    await releaseUnmappedForkMemory(ctx.paths, () => ctx.vms());
  }
}
