import { EnvironmentStore } from "../environments/environment-store.js";
import { PyroError } from "../errors.js";
import { memoizeUntilFailure } from "../memoize.js";
import type { PyroPaths } from "../paths.js";
import type { GuestRuntime } from "../runtime/guest-runtime.js";
import { runningVmControl } from "../runtime/running-vm-control.js";
import type { RunningVm, RunningVmControl } from "../runtime/vmm-backend.js";
import { UNNAMED_PURPOSE } from "../storage/process-lock.js";
import { nowIso, vmHandle, type WorkspaceRecord } from "./workspace-record.js";
import { recoverInterrupted, recoverWorkspace, SWEEP_REUSE_MS } from "./workspace-recovery.js";
import { Redactor } from "./secret-redaction.js";
import { loadRedactedValues, loadSecrets } from "./workspace-secrets.js";
import { WorkspaceStore } from "./workspace-store.js";

/** What every workspace operation needs; cheap to build, the runtime is prepared lazily. */
export class WorkspaceContext {
  readonly store: WorkspaceStore;
  readonly environments: EnvironmentStore;
  /**
   * Built once per context (an operation asks up to three times): the hold keeps no state about
   * any VM, every call on it reads /proc and the run directory afresh.
   */
  private readonly vmControl = memoizeUntilFailure(() => runningVmControl(this.paths));

  constructor(
    readonly paths: PyroPaths,
    private readonly onProgress?: (message: string) => void,
    /** Tests only: a runtime built another way (e.g. booting the hostile test agent). */
    private readonly runtimeOverride?: () => Promise<GuestRuntime>,
  ) {
    this.store = new WorkspaceStore(paths);
    this.environments = new EnvironmentStore(paths);
  }

  /** What booting a VM needs (kernel, initramfs, accelerator, backend); loaded and prepared on first use. */
  runtime(): Promise<GuestRuntime> {
    if (this.runtimeOverride) return this.runtimeOverride();
    return import("../runtime/guest-runtime.js").then(({ prepareGuestRuntime }) => prepareGuestRuntime(this.paths, this.onProgress));
  }

  /**
   * The backend's hold on VMs that already run: what an operation on a running workspace needs,
   * without the runtime's checks of what a boot needs (see runningVmControl).
   */
  vms(): Promise<RunningVmControl> {
    if (this.runtimeOverride) return this.runtimeOverride().then((runtime) => runtime.backend);
    return this.vmControl();
  }

  /** Tells the user something pyro did on its own (a crash recovery): progress channel, else stderr. */
  notice(message: string): void {
    if (this.onProgress) this.onProgress(`pyro: ${message}`);
    else process.stderr.write(`pyro: ${message}\n`);
  }

  /**
   * Repairs what operations interrupted by a crash left behind, in every workspace. Listing,
   * status and create always sweep; an operation on one workspace may reuse a recent sweep
   * (recoverInterruptedIfDue).
   */
  recoverInterrupted(): Promise<void> {
    // One at a time per context: an operation that arrives while a sweep runs waits for it.
    this.sweeping ??= recoverInterrupted(this)
      .then(() => {
        this.sweptAt = performance.now();
      })
      .finally(() => {
        this.sweeping = undefined;
      });
    return this.sweeping;
  }

  /**
   * The sweep before an operation on one workspace, unless this context finished one within
   * SWEEP_REUSE_MS. The sweep scans every workspace and every process (~2–3 ms, more with many
   * held); an agent driving one workspace through a long-lived SDK or MCP server would pay it on
   * every command. What skipping it leaves: the workspace the operation acts on is still repaired
   * under its lock (a dead holder's leftovers there, its VM reconciled); other workspaces'
   * leftovers are repaired by the next command on them or by any command after SWEEP_REUSE_MS.
   * A CLI process is new every time: it always sweeps.
   */
  recoverInterruptedIfDue(): Promise<void> {
    if (this.sweeping) return this.sweeping;
    if (performance.now() - this.sweptAt < SWEEP_REUSE_MS) return Promise.resolve();
    return this.recoverInterrupted();
  }

  /** When this context's last sweep finished (performance.now()). */
  private sweptAt = Number.NEGATIVE_INFINITY;
  private sweeping: Promise<void> | undefined;
}

export { nowIso, vmHandle };

/**
 * Brings the record in line with reality: a VM that died behind pyro's back (kill -9, host crash)
 * is recorded as stopped, with the reason. Returns whether the VM is running.
 */
export async function reconcileVm(ctx: WorkspaceContext, record: WorkspaceRecord): Promise<boolean> {
  const handle = vmHandle(record);
  if (!handle) return false;
  const vms = await ctx.vms();
  if (await vms.isRunning(handle)) return true;
  record.vm = null;
  record.unexpected_stop = `the VM (pid ${handle.pid}) exited without pyro stopping it; files written before are kept — start it again with 'pyro workspace start ${record.id}'`;
  record.updated_at = nowIso();
  await ctx.store.write(record);
  // It may have been the last VM mapping a fork's RAM file (a guest can end its VM at any time).
  // Loaded here, not up front: every workspace command passes through this module.
  const { releaseUnmappedForkMemory } = await import("./fork-memory.js");
  await releaseUnmappedForkMemory(ctx.paths, async () => vms);
  return false;
}

/**
 * Runs `fn` on a running workspace under its lock, connected to its agent. The VM keeps running
 * afterwards (detached), whatever `fn` does.
 */
export async function withRunningWorkspace<T>(
  ctx: WorkspaceContext,
  ref: string,
  fn: (record: WorkspaceRecord, vm: RunningVm, session: WorkspaceSession) => Promise<T>,
  purpose = UNNAMED_PURPOSE,
): Promise<T> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      const stopped = () =>
        new PyroError("WORKSPACE_STOPPED", `workspace ${record.id} is stopped; start it with 'pyro workspace start ${record.id}'`, { workspace: record.id });
      const handle = vmHandle(record);
      if (!handle) throw stopped();
      // attach checks that the VM runs; one that died behind pyro's back is recorded as stopped.
      const attaching = (await ctx.vms()).attach(handle).catch(async (error: unknown) => {
        if (error instanceof PyroError && error.code === "VM_DIED" && !(await reconcileVm(ctx, record))) throw stopped();
        throw error;
      });
      // Read while the agent answers: on the path of every command.
      const reading = Promise.all([loadSecrets(ctx, record.id), loadRedactedValues(ctx, record.id)]);
      const [attached, read] = await Promise.allSettled([attaching, reading]);
      if (attached.status === "rejected") throw attached.reason;
      const vm = attached.value;
      try {
        if (read.status === "rejected") throw read.reason;
        const [injected, redacted] = read.value;
        vm.agent.label = `workspace ${record.id}`;
        // --secret-env NAME of a scoped secret maps its placeholder, never its value.
        const secrets = { ...injected, ...Object.fromEntries(record.scoped_secrets.map((s) => [s.name, s.placeholder])) };
        return await withRedaction(new Redactor(redacted), async (redactor) => {
          if (record.guest_cleanup_pending) {
            const { removeStaleStaging } = await import("./guest-transfer.js");
            await removeStaleStaging(vm.agent);
            record.guest_cleanup_pending = false;
            await ctx.store.write(record);
          }
          return fn(record, vm, { secrets, redactor });
        });
      } finally {
        vm.detach();
      }
    },
    purpose,
  );
}

/** One choke point: nothing a running workspace returns, or says in an error, leaves pyro with a secret in it. */
async function withRedaction<T>(redactor: Redactor, fn: (redactor: Redactor) => Promise<T>): Promise<T> {
  try {
    return redactor.deep(await fn(redactor));
  } catch (error) {
    if (error instanceof PyroError && redactor.active) throw new PyroError(error.code, redactor.text(error.message), redactor.deep(error.details));
    throw error;
  }
}

/** Per-operation facts about a running workspace beyond its record. */
export interface WorkspaceSession {
  secrets: Record<string, string>;
  redactor: Redactor;
}

/**
 * Like withRunningWorkspace, for operations that handle any VM state themselves. `purpose` is
 * what the lock says this process is doing: what recovery reports if it is cut short.
 */
export async function withLockedWorkspace<T>(
  ctx: WorkspaceContext,
  ref: string,
  fn: (record: WorkspaceRecord) => Promise<T>,
  purpose = UNNAMED_PURPOSE,
): Promise<T> {
  await ctx.recoverInterruptedIfDue();
  const id = await ctx.store.idOf(ref);
  return ctx.store.withLock(id, purpose, async (interrupted) => {
    // Its holder died (after the last sweep, or one this operation did not wait for): repair before use.
    if (interrupted) await recoverWorkspace(ctx, id, interrupted);
    return fn(await ctx.store.resolve(id));
  });
}
