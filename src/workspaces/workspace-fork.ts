import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import type { RunningVm, SavedMemory } from "../runtime/vmm-backend.js";
import { makePrivateTempDir, PRIVATE_DIR_MODE } from "../storage/private-storage.js";
import { DiskAdoption, linkTree, under } from "./disk-adoption.js";
import { finishForkMemory, newForkMemoryPath, releaseUnmappedForkMemory } from "./fork-memory.js";
import { bootWorkspace, layerDisk, layerWorkspaceDisk } from "./workspace-boot.js";
import { diskPath, seedImagePath, workspaceDiskPath } from "./workspace-disk-files.js";
import { nowIso, reconcileVm, vmHandle, withLockedWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { deleteWorkspace, viewOf, type WorkspaceView } from "./workspace-lifecycle.js";
import { FORK_COUNT } from "./workspace-limits.js";
import type { SnapshotRecord, WorkspaceRecord } from "./workspace-record.js";
import { BASELINE_SNAPSHOT } from "./workspace-snapshots.js";
import { newWorkspaceId, validateName } from "./workspace-store.js";

/**
 * `workspace fork`: new workspaces that continue from a running workspace's current memory and
 * disks — processes, shells and services included — while the source keeps running.
 *
 * The source is paused only while its devices, its RAM (mapped: see RunningVm.saveMappedState) and
 * copies of its two disk overlays are taken; every copy then restores from that one capture with
 * its RAM file mapped copy-on-write, its own overlays, hostname, entropy, machine-id and (with a
 * network) NIC and egress proxy. Writes after the fork are isolated both ways: each side writes
 * its own overlay and its own private pages.
 */

export interface ForkWorkspaceOptions {
  /** How many copies (default: one per name, at least 1). */
  count?: number;
  /** Names for the copies, in order (fewer than count: the rest have none). */
  names?: string[];
}

export interface ForkView {
  source_workspace_id: string;
  /** How the source's RAM reached the copies: a mapped RAM file, streamed in the state, or none (a stopped source). */
  memory: "mapped" | "streamed" | "none";
  /** Why the RAM was streamed or why the copies are stopped. */
  note: string | null;
  /** How long the source was paused for the capture. */
  source_paused_ms: number;
  fork_ms: number;
  forks: (WorkspaceView & { fork_ms: number })[];
}

/** Files of a workspace directory a fork takes as its own (its record, disks, scratch and audit excepted). */
function inheritedFile(name: string): boolean {
  return !name.startsWith(".") && !["workspace.json", "disk.qcow2", "workspace.qcow2", "seed.ext4", "secret-audit.json"].includes(name);
}

/** Count and names, checked before anything is paused or made. */
export function checkForkOptions(options: ForkWorkspaceOptions): { count: number; names: (string | undefined)[] } {
  const names = options.names ?? [];
  const count = options.count ?? Math.max(names.length, FORK_COUNT.default);
  if (!Number.isInteger(count) || count < FORK_COUNT.min || count > FORK_COUNT.max) {
    throw new PyroError("INVALID_ARGUMENT", `fork count must be a whole number from ${FORK_COUNT.min} to ${FORK_COUNT.max}, got ${count}`);
  }
  if (names.length > count) throw new PyroError("INVALID_ARGUMENT", `${names.length} names for ${count} copies: give at most one name per copy`);
  const seen = new Set<string>();
  for (const name of names) {
    validateName(name);
    if (seen.has(name)) throw new PyroError("INVALID_ARGUMENT", `the name '${name}' is given twice; each copy needs its own`);
    seen.add(name);
  }
  return { count, names: Array.from({ length: count }, (_, i) => names[i]) };
}

/** What every copy is made from: the captured (or, for a stopped source, the live) disks and state. */
interface ForkSource {
  record: WorkspaceRecord;
  dir: string;
  rootDisk: string;
  workspaceDisk: string | undefined;
  /** Absent for a stopped source: the copies are stopped too. */
  state?: { path: string; memory: SavedMemory };
}

export async function forkWorkspace(ctx: WorkspaceContext, ref: string, options: ForkWorkspaceOptions = {}): Promise<ForkView> {
  const started = Date.now();
  const plan = checkForkOptions(options);
  for (const name of plan.names) if (name) await ctx.store.assertNameFree(name);
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      const memoryOnly = record.scoped_secrets.filter((s) => s.memory_only).map((s) => s.name);
      if (memoryOnly.length) {
        throw new PyroError(
          "INVALID_ARGUMENT",
          `workspace ${record.id} keeps the values of ${memoryOnly.join(", ")} in its proxy's memory only; a copy could not send them (create it without --secret-memory-only to fork it)`,
        );
      }
      const runtime = await ctx.runtime();
      const dir = ctx.store.dir(record.id);
      const running = await reconcileVm(ctx, record);
      // Scratch in the source's directory: recovery removes it if this is cut short.
      const capture = await makePrivateTempDir(dir, ".fork-");
      let memoryPath: string | undefined;
      let pausedMs = 0;
      try {
        const source: ForkSource = {
          record,
          dir,
          rootDisk: diskPath(ctx, record.id),
          workspaceDisk: record.disk_gib !== null ? workspaceDiskPath(ctx, record.id) : undefined,
        };
        if (running) {
          const vm = await runtime.backend.attach(vmHandle(record)!);
          try {
            memoryPath = await newForkMemoryPath(ctx.paths);
            const pausedAt = Date.now();
            const captured = await captureRunning(vm, capture, source, memoryPath);
            pausedMs = Date.now() - pausedAt;
            Object.assign(source, captured);
          } finally {
            vm.detach();
          }
        }
        const stage = await stageForkFiles(ctx, source, join(capture, "stage"), running);
        // All at once (each under its own lock), and all or nothing: a copy that failed takes the others with it.
        const made = await Promise.allSettled(plan.names.map((name) => makeFork(ctx, source, stage, name)));
        const failed = made.find((r): r is PromiseRejectedResult => r.status === "rejected");
        const forks = made.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
        if (failed) {
          for (const f of forks) await deleteWorkspace(ctx, f.workspace_id).catch(() => undefined);
          throw failed.reason;
        }
        const memory = source.state?.memory;
        return {
          source_workspace_id: record.id,
          memory: memory?.kind ?? "none",
          note: !memory
            ? `workspace ${record.id} is stopped: the copies are stopped copies of its disks; start them with 'pyro workspace start'`
            : memory.kind === "streamed"
              ? `guest memory was streamed: ${memory.reason}`
              : null,
          source_paused_ms: pausedMs,
          fork_ms: Date.now() - started,
          forks,
        };
      } finally {
        await rm(capture, { recursive: true, force: true });
        if (memoryPath) await finishForkMemory(memoryPath, runtime.backend);
        await releaseUnmappedForkMemory(ctx.paths, async () => runtime.backend);
      }
    },
    "fork",
  );
}

/** Pauses the source, saves its devices and RAM and copies its disk overlays, then resumes it. */
async function captureRunning(vm: RunningVm, capture: string, source: ForkSource, memoryPath: string | undefined): Promise<Partial<ForkSource>> {
  await vm.agent.sync();
  const statePath = join(capture, "state.bin");
  try {
    let memory: SavedMemory = { kind: "streamed", reason: "guest RAM is not kept in memory files on this host" };
    if (memoryPath) memory = await vm.saveMappedState(statePath, memoryPath);
    else await vm.saveState(statePath);
    const cp = requireExecutable("cp", "coreutils");
    // Both overlays while paused: consistent with the memory and with each other.
    const rootDisk = join(capture, "disk.qcow2");
    await runHostCommand(cp, ["--sparse=always", source.rootDisk, rootDisk], { privateFiles: true });
    const workspaceDisk = source.workspaceDisk ? join(capture, "workspace.qcow2") : undefined;
    if (source.workspaceDisk && workspaceDisk) await runHostCommand(cp, ["--sparse=always", source.workspaceDisk, workspaceDisk], { privateFiles: true });
    return { rootDisk, workspaceDisk, state: { path: statePath, memory } };
  } finally {
    await vm.resume();
  }
}

/** One copy: its directory, files, disks and (for a running source) its VM, under its own lock. */
async function makeFork(ctx: WorkspaceContext, source: ForkSource, stage: ForkStage, name: string | undefined): Promise<WorkspaceView & { fork_ms: number }> {
  const started = Date.now();
  const id = newWorkspaceId();
  const now = nowIso();
  const record: WorkspaceRecord = {
    ...structuredClone(source.record),
    id,
    name: name ?? null,
    created_at: now,
    updated_at: now,
    last_activity_at: now,
    vm: null,
    snapshots: [],
    // Services keep running in the copy; their host ports stay the source's.
    services: Object.fromEntries(Object.entries(source.record.services).map(([n, s]) => [n, { ...s, published: [] }])),
    unexpected_stop: null,
    recovery: null,
    guest_cleanup_pending: false,
  };
  // Locked before its directory exists, as create: cut short, recovery removes the half-made copy.
  return ctx.store.withLock(id, "fork", async () => {
    const claim = await ctx.store.claimName(record.name, id);
    let vm: RunningVm | undefined;
    try {
      const dir = await ctx.store.createDir(id);
      for (const entry of await readdir(source.dir, { withFileTypes: true })) {
        // Copied, not linked: some are changed in place (the command log is appended to).
        if (entry.isFile() && inheritedFile(entry.name)) await copyFile(join(source.dir, entry.name), join(dir, entry.name));
      }
      // The disk layers by hard link: immutable, and the same bytes for every copy.
      await linkTree(stage.dir, dir);
      record.snapshots = [stage.baseline];
      const base = join(dir, FORK_BASE);
      if (source.state) {
        const memory = source.state.memory;
        vm = await bootWorkspace(ctx, record, {
          kind: "restore",
          statePath: source.state.path,
          diskPath: join(base, "disk.qcow2"),
          ...(source.workspaceDisk ? { workspaceDiskPath: join(base, "workspace.qcow2") } : {}),
          mode: "fork_restore",
          ...(memory.kind === "mapped" ? { memoryPath: memory.memoryPath } : {}),
        });
      } else {
        await layerDisk(ctx, record, join(base, "disk.qcow2"), "qcow2");
        if (source.workspaceDisk) await layerWorkspaceDisk(ctx, record, join(base, "workspace.qcow2"), "qcow2");
      }
      await ctx.store.write(record);
      await claim.release();
      vm?.detach();
      return { ...viewOf(record), fork_ms: Date.now() - started };
    } catch (error) {
      if (vm) await vm.dispose();
      await ctx.store.remove(id);
      await claim.release();
      throw error;
    }
  });
}

/** Where a copy's own disk layers live in its directory (its live overlays sit on them). */
const FORK_BASE = "fork-base";

/** One tree laid out as a workspace directory, which every copy takes by hard links. */
interface ForkStage {
  dir: string;
  baseline: SnapshotRecord;
}

/**
 * Lays out once the disk layers every copy starts with: the source's seed image and baseline, and
 * its two disks as the copies' base layers, with every layer from the source's directory taken
 * along (see DiskAdoption).
 */
async function stageForkFiles(ctx: WorkspaceContext, source: ForkSource, stage: string, captured: boolean): Promise<ForkStage> {
  await mkdir(stage, { recursive: true, mode: PRIVATE_DIR_MODE });
  const adoption = new DiskAdoption(source.dir, (rel) => {
    // The seed image and the baseline keep their places (reset and diff find them there); other layers are the copy's private base.
    if (rel === "seed.ext4" || rel.startsWith(`snapshots/${BASELINE_SNAPSHOT}/`)) return under(stage, rel);
    return under(join(stage, FORK_BASE), rel);
  });
  if (source.record.disk_gib !== null) await adoption.adopt(seedImagePath(ctx, source.record.id));
  const baseline = await adoptBaseline(source, adoption);
  // The captured overlays are this fork's own copies: moved into place. A stopped source's live ones are copied.
  await adoption.take(source.rootDisk, join(stage, FORK_BASE, "disk.qcow2"), captured);
  if (source.workspaceDisk) await adoption.take(source.workspaceDisk, join(stage, FORK_BASE, "workspace.qcow2"), captured);
  return { dir: stage, baseline };
}

/** The copy's baseline is the source's: a template baseline is a name; a saved one's files are taken over. */
async function adoptBaseline(source: ForkSource, adoption: DiskAdoption): Promise<SnapshotRecord> {
  const baseline = source.record.snapshots.find((s) => s.name === BASELINE_SNAPSHOT);
  if (!baseline) throw new PyroError("SNAPSHOT_NOT_FOUND", `workspace ${source.record.id} has no baseline to give its copies`);
  if (baseline.template) return { ...baseline };
  const from = join(source.dir, "snapshots", BASELINE_SNAPSHOT);
  for (const file of [baseline.state_file, baseline.disk_file, baseline.workspace_disk_file, baseline.memory_file]) {
    if (file) await adoption.adopt(under(from, file));
  }
  return { ...baseline };
}
