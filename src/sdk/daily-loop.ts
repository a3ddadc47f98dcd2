import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import { PyroError } from "../errors.js";
import type { DailyLoopReadiness } from "../workspaces/daily-loop-readiness.js";
import type { Pyro } from "./pyro.js";

/** One timed step of a demo or prepare proof. */
export interface LoopStep {
  step: "create" | "exec" | "reset" | "delete";
  ms: number;
  ok: boolean;
  detail: string;
}

export interface DemoResult {
  environment: string;
  network: boolean;
  workspace_id: string | null;
  command: string;
  exit_code: number | null;
  stdout: string;
  steps: LoopStep[];
  total_ms: number;
  /** True when every step succeeded and the command exited 0. */
  ok: boolean;
  /** Why it failed, when it did (the workspace was still deleted). */
  error?: string;
}

export interface PrepareResult {
  environment: string;
  network: boolean;
  force: boolean;
  before: DailyLoopReadiness;
  after: DailyLoopReadiness;
  /** What prepare did, in order. */
  actions: string[];
  proof: LoopStep[];
  total_ms: number;
}

const OFFLINE_DEMO_COMMAND = "git --version";
// The original demo's network proof: one HTTPS fetch through the guest's egress path.
const NETWORK_DEMO_COMMAND = `python3 -c "import urllib.request; print(urllib.request.urlopen('https://example.com', timeout=20).status)"`;

/**
 * create → exec → (reset) → delete of one throwaway workspace, each step timed. The workspace is
 * deleted whatever happens after it exists; a failure ends the sequence and is returned in `error`.
 */
async function throwawayLoop(
  pyro: Pyro,
  environment: string,
  options: { network: boolean; command: string; reset: boolean; onStep?: (step: LoopStep) => void },
) {
  const steps: LoopStep[] = [];
  const record = (step: LoopStep) => {
    steps.push(step);
    options.onStep?.(step);
  };
  const timed = async <T>(step: LoopStep["step"], action: () => Promise<T>, describe: (value: T) => string): Promise<T> => {
    const started = Date.now();
    try {
      const value = await action();
      record({ step, ms: Date.now() - started, ok: true, detail: describe(value) });
      return value;
    } catch (error) {
      record({ step, ms: Date.now() - started, ok: false, detail: (error as Error).message });
      throw error;
    }
  };
  let workspaceId: string | null = null;
  let exec: { exit_code: number; stdout: string } | undefined;
  let failure: unknown;
  try {
    const created = await timed(
      "create",
      () => pyro.createWorkspace(environment, options.network ? { networkPolicy: "egress" } : {}),
      (w) => `${w.workspace_id} (${w.vm?.start_mode ?? "unknown"})`,
    );
    workspaceId = created.workspace_id;
    const id = workspaceId;
    exec = await timed(
      "exec",
      () => pyro.execWorkspace(id, options.command),
      (r) => `exit ${r.exit_code}`,
    );
    if (options.reset)
      await timed(
        "reset",
        () => pyro.resetWorkspace(id),
        (r) => `to ${r.snapshot} (${r.start_mode})`,
      );
  } catch (error) {
    failure = error;
  } finally {
    if (workspaceId !== null) {
      const id = workspaceId;
      await timed(
        "delete",
        () => pyro.deleteWorkspace(id),
        () => "deleted",
      ).catch((error: unknown) => {
        failure ??= error;
      });
    }
  }
  return { steps, workspaceId, exec, failure };
}

/** `pyro demo`: proves the workspace lifecycle end to end on this host. */
export async function runDemo(pyro: Pyro, environment: string, options: { network?: boolean; onStep?: (step: LoopStep) => void } = {}): Promise<DemoResult> {
  const started = Date.now();
  const network = Boolean(options.network);
  const command = network ? NETWORK_DEMO_COMMAND : OFFLINE_DEMO_COMMAND;
  const { steps, workspaceId, exec, failure } = await throwawayLoop(pyro, environment, {
    network,
    command,
    reset: false,
    ...(options.onStep ? { onStep: options.onStep } : {}),
  });
  return {
    environment,
    network,
    workspace_id: workspaceId,
    command,
    exit_code: exec?.exit_code ?? null,
    stdout: exec?.stdout ?? "",
    steps,
    total_ms: Date.now() - started,
    ok: failure === undefined && exec?.exit_code === 0,
    ...(failure !== undefined ? { error: (failure as Error).message } : {}),
  };
}

/**
 * `pyro prepare`: installs the environment, kernel, initramfs and boot template the daily loop needs,
 * then proves them with one throwaway create → exec → reset → delete. `force` rebuilds the template.
 */
export async function prepareDailyLoop(
  pyro: Pyro,
  environment: string,
  options: { network?: boolean; force?: boolean; onProgress?: (message: string) => void; onStep?: (step: LoopStep) => void } = {},
): Promise<PrepareResult> {
  const started = Date.now();
  const network = Boolean(options.network);
  const force = Boolean(options.force);
  const { dailyLoopReadiness } = await import("../workspaces/daily-loop-readiness.js");
  const before = await dailyLoopReadiness(pyro.paths, environment, { network });
  const actions: string[] = [];
  if (force && before.pieces.template.state === "warm") {
    await discardBootTemplate(pyro, environment);
    actions.push("discarded the boot template (--force)");
  }
  if (!Object.values(before.pieces).every((p) => p.state === "warm") || force) {
    await pyro.pullEnvironment(environment, options.onProgress ? { onProgress: options.onProgress } : {});
    for (const [piece, state] of Object.entries(before.pieces)) {
      if (piece !== "network" && state.state !== "warm") actions.push(`${state.state === "stale" ? "rebuilt" : "prepared"} ${piece}`);
    }
    if (force && before.pieces.template.state === "warm") actions.push("rebuilt template");
  }
  if (!actions.length) actions.push("nothing to prepare: every piece was warm");
  const { steps, failure } = await throwawayLoop(pyro, environment, {
    network,
    command: "true",
    reset: true,
    ...(options.onStep ? { onStep: options.onStep } : {}),
  });
  // The proof's own error says what broke (boot, exec, reset); the workspace is already deleted.
  if (failure !== undefined) throw failure;
  actions.push("proved the loop: create, exec, reset, delete");
  const after = await dailyLoopReadiness(pyro.paths, environment, { network });
  return { environment, network, force, before, after, actions, proof: steps, total_ms: Date.now() - started };
}

/**
 * Removes the environment's default-shape template so the next ensure rebuilds it. Workspaces'
 * disks are overlays on the template's disk, so it is refused while any workspace exists.
 */
async function discardBootTemplate(pyro: Pyro, environment: string): Promise<void> {
  const { count } = await pyro.listWorkspaces();
  if (count > 0) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `--force rebuilds the boot template, which the disks of ${count} existing workspace(s) are layered on; delete them first (pyro workspace list)`,
    );
  }
  const [{ EnvironmentStore }, { prepareGuestRuntime }, { findBootTemplate }, { WORKSPACE_DEFAULTS }] = await Promise.all([
    import("../environments/environment-store.js"),
    import("../runtime/guest-runtime.js"),
    import("../workspaces/boot-templates.js"),
    import("../workspaces/workspace-lifecycle.js"),
  ]);
  const installed = await new EnvironmentStore(pyro.paths).require(environment);
  const template = await findBootTemplate(pyro.paths, await prepareGuestRuntime(pyro.paths), installed, WORKSPACE_DEFAULTS);
  if (template) await rm(dirname(template.statePath), { recursive: true, force: true });
}
