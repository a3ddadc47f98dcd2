import { EnvironmentStore } from "../environments/environment-store.js";
import { PyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { prepareGuestRuntime, type GuestRuntime } from "../runtime/guest-runtime.js";
import type { RunningVm, VmHandle } from "../runtime/vmm-backend.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import { loadSecrets, Redactor } from "./workspace-secrets.js";
import { WorkspaceStore } from "./workspace-store.js";

/** What every workspace operation needs; cheap to build, the runtime is prepared lazily. */
export class WorkspaceContext {
  readonly store: WorkspaceStore;
  readonly environments: EnvironmentStore;

  constructor(
    readonly paths: PyroPaths,
    private readonly onProgress?: (message: string) => void,
    /** Tests only: a runtime built another way (e.g. booting the hostile test agent). */
    private readonly runtimeOverride?: () => Promise<GuestRuntime>,
  ) {
    this.store = new WorkspaceStore(paths);
    this.environments = new EnvironmentStore(paths);
  }

  runtime(): Promise<GuestRuntime> {
    return this.runtimeOverride ? this.runtimeOverride() : prepareGuestRuntime(this.paths, this.onProgress);
  }
}

export function nowIso(): string {
  return new Date().toISOString();
}

export function vmHandle(record: WorkspaceRecord): VmHandle | undefined {
  return record.vm ? { pid: record.vm.pid, runDir: record.vm.run_dir, accel: record.vm.accel } : undefined;
}

/**
 * Brings the record in line with reality: a VM that died behind pyro's back (kill -9, host crash)
 * is recorded as stopped, with the reason. Returns whether the VM is running.
 */
export async function reconcileVm(ctx: WorkspaceContext, record: WorkspaceRecord): Promise<boolean> {
  const handle = vmHandle(record);
  if (!handle) return false;
  const runtime = await ctx.runtime();
  if (await runtime.backend.isRunning(handle)) return true;
  record.vm = null;
  record.unexpected_stop = `the VM (pid ${handle.pid}) exited without pyro stopping it; files written before are kept — start it again with 'pyro workspace start ${record.id}'`;
  record.updated_at = nowIso();
  await ctx.store.write(record);
  return false;
}

/**
 * Runs `fn` on a running workspace under its lock, connected to its agent. The VM keeps running
 * afterwards (detached), whatever `fn` does.
 */
export async function withRunningWorkspace<T>(ctx: WorkspaceContext, ref: string, fn: (record: WorkspaceRecord, vm: RunningVm, session: WorkspaceSession) => Promise<T>): Promise<T> {
  const { id } = await ctx.store.resolve(ref);
  return ctx.store.withLock(id, async () => {
    const record = await ctx.store.resolve(id);
    if (!(await reconcileVm(ctx, record))) {
      throw new PyroError("WORKSPACE_STOPPED", `workspace ${record.id} is stopped; start it with 'pyro workspace start ${record.id}'`, { workspace: record.id });
    }
    const runtime = await ctx.runtime();
    const vm = await runtime.backend.attach(vmHandle(record)!);
    vm.agent.label = `workspace ${record.id}`;
    const secrets = await loadSecrets(ctx, record.id);
    const redactor = new Redactor(secrets);
    try {
      // One choke point: nothing a running workspace returns leaves pyro with a secret in it.
      return redactor.deep(await fn(record, vm, { secrets, redactor }));
    } catch (error) {
      if (error instanceof PyroError && redactor.active) throw new PyroError(error.code, redactor.text(error.message), redactor.deep(error.details));
      throw error;
    } finally {
      vm.detach();
    }
  });
}

/** Per-operation facts about a running workspace beyond its record. */
export interface WorkspaceSession {
  secrets: Record<string, string>;
  redactor: Redactor;
}

/** Like withRunningWorkspace, for operations that handle any VM state themselves. */
export async function withLockedWorkspace<T>(ctx: WorkspaceContext, ref: string, fn: (record: WorkspaceRecord) => Promise<T>): Promise<T> {
  const { id } = await ctx.store.resolve(ref);
  return ctx.store.withLock(id, async () => fn(await ctx.store.resolve(id)));
}
