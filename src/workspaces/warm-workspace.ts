import { rmSync } from "node:fs";
import { registerExitCleanup } from "../process/exit-cleanup.js";
import type { HeldLock } from "../storage/process-lock.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { giveVmItsOwnIdentity } from "../runtime/vm-identity.js";
import { hostCanKeepWarmVm, WarmSlot } from "../runtime/warm-slot.js";
import type { BootTemplate } from "./boot-templates.js";
import { DEFAULT_DISK_GIB } from "./seed-image.js";
import type { WorkspaceContext } from "./workspace-context.js";
import { bootNewWorkspace, captureBaseline, plainWorkspaceRecord, WORKSPACE_DEFAULTS } from "./workspace-lifecycle.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import type { NameClaim } from "./workspace-store.js";

/**
 * A workspace made ahead of its create (#10 item 7), so that the next unseeded create of the
 * default machine answers in tens of ms: an empty workspace of its own id, disks and VM, started
 * from the boot template exactly as a create starts one, through a first command, then paused.
 *
 * Until it is taken it *is* an unfinished create, and crash recovery already knows what to do with
 * one: its directory has no record and its lock stays held by this process the whole time, so
 * other pyro processes leave it alone while this one lives, and once this process dies (kill -9
 * included) the next pyro command removes its files and stops its VM (a VM whose run directory
 * names a workspace without a record). Taking it is the end of that create: resume, a fresh
 * identity (entropy, clock, machine-id; hostname = id) because it sat paused, the caller's name,
 * labels and TTL in the record, the baseline, then the record is written and the lock released.
 * Nothing is moved or adopted at take: the disks were made in the workspace's own directory, where
 * QEMU opened them (moving an image QEMU holds open would leave it naming a path that is gone).
 */
interface ReadyWorkspace {
  record: WorkspaceRecord;
  vm: RunningVm;
  template: BootTemplate | undefined;
  lock: HeldLock;
  /** Drops the exit cleanup that removes its files if this process exits before it is taken. */
  unregister: () => void;
}

export interface WarmWorkspaceOptions {
  /** The environment it is kept for; creates of anything else start their own VM. */
  environment: string;
  /** Below this much MemAvailable, none is kept (default WARM_VM_MIN_HOST_AVAILABLE_MIB). */
  minAvailableMib?: number;
}

/** The machine a warm workspace is made as: the default shape and disk, no NIC. */
const WARM_SHAPE = { ...WORKSPACE_DEFAULTS, diskGib: DEFAULT_DISK_GIB };

export class WarmWorkspaceSlot {
  private readonly slot: WarmSlot<ReadyWorkspace>;

  constructor(
    private readonly ctx: WorkspaceContext,
    readonly options: WarmWorkspaceOptions,
  ) {
    this.slot = new WarmSlot({ prepare: () => this.prepare(), lost: (ready) => ready.vm.exited, discard: (ready) => this.discard(ready) });
  }

  /** Starts making one unless one is ready or being made, or memory is low; resolves whether one is ready. */
  fill(): Promise<boolean> {
    return this.slot.fill();
  }

  private async prepare(): Promise<ReadyWorkspace | undefined> {
    if (!(await hostCanKeepWarmVm(this.options.minAvailableMib))) return undefined;
    const { ctx } = this;
    const record = plainWorkspaceRecord(this.options.environment, WARM_SHAPE, WARM_SHAPE.diskGib);
    const { id } = record;
    // Held before its directory exists, as every create holds it (see workspace-lifecycle).
    const lock = await ctx.store.holdNewLock(id, "create (made ahead, kept warm)");
    let vm: RunningVm | undefined;
    // A normal exit (an MCP client gone, process.exit) leaves nothing: the VM dies with this process
    // until it is detached (the backend's own exit cleanup), and its files go here. A kill -9 leaves both to recovery.
    const unregister = registerExitCleanup(
      () => {
        for (const path of [ctx.store.dir(id), ctx.store.runDir(id), ctx.store.lockPath(id)]) rmSync(path, { recursive: true, force: true });
      },
      () => this.discard({ record, vm, lock, unregister: () => undefined }),
    );
    try {
      await ctx.store.createDir(id);
      const booted = await bootNewWorkspace(ctx, record, undefined, undefined);
      vm = booted.vm;
      // Under TCG the first run of any guest code pays for its translation: pay it now, not in the user's first exec.
      await vm.agent.exec({ command: ["true"], cwd: "/", timeoutMs: 30_000 });
      await vm.pause();
      return { record, vm, template: booted.template, lock, unregister };
    } catch (error) {
      await this.discard({ record, vm, lock, unregister });
      throw error;
    }
  }

  /** Stops its VM (if it got one), removes its files, then lets go of its lock: nothing of it is left. */
  private async discard(ready: Omit<ReadyWorkspace, "vm" | "template"> & { vm: RunningVm | undefined }): Promise<void> {
    await ready.vm?.dispose();
    await this.ctx.store.remove(ready.record.id);
    await ready.lock.release();
    ready.unregister();
  }

  /** Whether a create of `wanted` can be finished with the warm workspace: it is one the same but for name, labels and TTL. */
  private serves(wanted: WorkspaceRecord): boolean {
    return (
      wanted.environment === this.options.environment &&
      wanted.vcpu_count === WARM_SHAPE.vcpuCount &&
      wanted.mem_mib === WARM_SHAPE.memMib &&
      wanted.disk_gib === WARM_SHAPE.diskGib &&
      wanted.seed.mode === "empty" &&
      wanted.network_policy === "off" &&
      // Secrets are written into the workspace before its VM starts: a create with any starts its own.
      !wanted.secret_names.length &&
      !wanted.scoped_secrets.length &&
      !wanted.tls_interception &&
      !wanted.secrets_over_http
    );
  }

  /**
   * Finishes the create `wanted` describes (an unseeded, offline, secret-free workspace) with the
   * ready workspace, if one is ready for this environment and machine: its record is `wanted`
   * under the ready one's id, written before return. Undefined when there is none ready (one being
   * made is not waited for) or it could not be finished (the caller then creates one as usual).
   */
  async take(wanted: WorkspaceRecord): Promise<WorkspaceRecord | undefined> {
    if (!this.serves(wanted)) return undefined;
    const ready = await this.slot.claim();
    if (!ready) return undefined;
    const { vm, template } = ready;
    const record: WorkspaceRecord = { ...wanted, id: ready.record.id, seed: ready.record.seed, vm: ready.record.vm, snapshots: [] };
    let claim: NameClaim | undefined;
    try {
      // Claimed first, under its lock, as every create claims it: a name taken meanwhile costs no
      // resume (the usual create then says so).
      claim = await this.ctx.store.claimName(record.name, record.id);
      await vm.resume();
      // It sat paused: its clock is behind, and its entropy must not be what it had when it was made.
      await giveVmItsOwnIdentity(vm, record.id);
      await captureBaseline(this.ctx, record, vm, template);
      // Its files must outlive an exit from the write on. An exit before it lands leaves files and a
      // VM without a record under a dead holder's lock: an unfinished create, which recovery removes.
      ready.unregister();
      await this.ctx.store.write(record);
    } catch {
      // Not finished: it goes, and the caller creates one as usual (what discard cannot remove, recovery does).
      await claim?.release().catch(() => undefined);
      await this.discard(ready).catch(() => undefined);
      return undefined;
    }
    await claim.release();
    vm.detach();
    await ready.lock.release();
    return record;
  }

  /** Throws the ready workspace away (VM and files); the next fill makes another. */
  empty(): Promise<void> {
    return this.slot.empty();
  }

  /** Throws the ready workspace away and keeps no other. */
  close(): Promise<void> {
    return this.slot.close();
  }
}
