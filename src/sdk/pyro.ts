import { memoizeUntilFailure } from "../memoize.js";
import { resolvePaths, type PyroPaths } from "../paths.js";
import type { EnvironmentStatus } from "../environments/environment-store.js";
import type { LoopStep } from "./daily-loop.js";
import type { RunOptions } from "../vm-run/run-result.js";
import type { WarmVmSlot } from "../vm-run/warm-vm.js";
import type { WarmWorkspaceSlot } from "../workspaces/warm-workspace.js";
import type { WorkspaceContext } from "../workspaces/workspace-context.js";
import type { WorkspaceExecOptions } from "../workspaces/workspace-exec.js";
import type { CreateWorkspaceOptions, UpdateWorkspaceOptions } from "../workspaces/workspace-lifecycle.js";
import type { ProjectSource } from "../workspaces/project-seed.js";
import type { DiffOptions } from "../workspaces/workspace-diff.js";
import type { StartServiceOptions } from "../workspaces/workspace-services.js";
import type { ShellReadOptions } from "../workspaces/workspace-shells.js";
import type { ShellSignal } from "../workspaces/workspace-limits.js";
import type { ForkWorkspaceOptions } from "../workspaces/workspace-fork.js";

// Capabilities load on first use: a one-shot run must not pay to import workspaces, registries,
// terminal emulation or archive code (start-up time is part of `pyro run`'s budget). Each is
// imported once: import() of a module already loaded still resolves its specifier again (~0.2 ms),
// on the path of every SDK call.
const oneShot = memoizeUntilFailure(() => import("../vm-run/one-shot-run.js"));
const environments = memoizeUntilFailure(() => import("../environments/environment-store.js"));
const catalog = memoizeUntilFailure(() => import("../environments/catalog.js"));
const artifacts = memoizeUntilFailure(() => import("../environments/environment-artifact.js"));
const containerImport = memoizeUntilFailure(() => import("../environments/container-import.js"));
const references = memoizeUntilFailure(() => import("../registry/image-reference.js"));
const runtime = memoizeUntilFailure(() => import("../runtime/guest-runtime.js"));
const templates = memoizeUntilFailure(() => import("../workspaces/boot-templates.js"));
const doctor = memoizeUntilFailure(() => import("../doctor/doctor.js"));
const dailyLoop = memoizeUntilFailure(() => import("./daily-loop.js"));
const readiness = memoizeUntilFailure(() => import("../workspaces/daily-loop-readiness.js"));
const lifecycle = memoizeUntilFailure(() => import("../workspaces/workspace-lifecycle.js"));
const exec = memoizeUntilFailure(() => import("../workspaces/workspace-exec.js"));
const files = memoizeUntilFailure(() => import("../workspaces/workspace-files.js"));
const tree = memoizeUntilFailure(() => import("../workspaces/workspace-tree.js"));
const exporting = memoizeUntilFailure(() => import("../workspaces/workspace-export.js"));
const snapshots = memoizeUntilFailure(() => import("../workspaces/workspace-snapshots.js"));
const summary = memoizeUntilFailure(() => import("../workspaces/workspace-summary.js"));
const shells = memoizeUntilFailure(() => import("../workspaces/workspace-shells.js"));
const services = memoizeUntilFailure(() => import("../workspaces/workspace-services.js"));
const disk = memoizeUntilFailure(() => import("../workspaces/workspace-disk.js"));
const fork = memoizeUntilFailure(() => import("../workspaces/workspace-fork.js"));

export interface PyroOptions {
  /** Put all caches and state under this directory (same as PYRO_HOME). */
  home?: string;
  /** Receives progress lines (kernel download, environment build…). */
  onProgress?: (message: string) => void;
  /** Seeds workspaces created without seedPath (what `pyro mcp serve` finds in its checkout). */
  project?: ProjectSource;
  /**
   * After each `run`, keep one VM of the default run shape restored and paused for the next run of
   * this environment; after each unseeded create, one workspace of the default shape for the next
   * unseeded, offline, secret-free create (for a long-lived process: `pyro mcp serve` does). One at
   * a time, of the kind last used; none while host memory is low. `warmUp()` prepares one first.
   */
  warmVm?: { environment: string; minAvailableMib?: number };
}

/** The pyro SDK: the same operations as the CLI and the MCP tools, returning the same structures. */
export class Pyro {
  readonly paths: PyroPaths;
  private context: Promise<WorkspaceContext> | undefined;
  private warm: Promise<WarmVmSlot> | undefined;
  private warmCreate: Promise<WarmWorkspaceSlot> | undefined;
  /** Which kind of warm VM `warmUp` prepares: the one last used. */
  private warmFor: "run" | "workspace" = "workspace";

  constructor(private readonly options: PyroOptions = {}) {
    this.paths = resolvePaths(options.home ? { ...process.env, PYRO_HOME: options.home } : process.env);
  }

  private get workspaces(): Promise<WorkspaceContext> {
    this.context ??= import("../workspaces/workspace-context.js").then(({ WorkspaceContext: Context }) => new Context(this.paths, this.options.onProgress));
    return this.context;
  }

  /** Runs one command in a disposable microVM and destroys it. `command` is argv (no shell). */
  async run(environment: string, command: string[], options: RunOptions = {}) {
    const result = await (await oneShot()).runOneShot(this.paths, environment, command, options, await this.warmSlot());
    // One warm VM at a time, of the kind last used (the run's slot is refilling already).
    if (this.options.warmVm) void this.warmUp("run").catch(() => undefined);
    return result;
  }

  private warmSlot(): Promise<WarmVmSlot> | undefined {
    const wanted = this.options.warmVm;
    if (!wanted) return undefined;
    this.warm ??= Promise.all([import("../vm-run/warm-vm.js"), import("../vm-run/run-result.js")]).then(
      ([{ WarmVmSlot: Slot }, { RUN_DEFAULTS }]) =>
        new Slot(this.paths, {
          environment: wanted.environment,
          vcpuCount: RUN_DEFAULTS.vcpuCount,
          memMib: RUN_DEFAULTS.memMib,
          ...(wanted.minAvailableMib !== undefined ? { minAvailableMib: wanted.minAvailableMib } : {}),
        }),
    );
    return this.warm;
  }

  private warmWorkspaceSlot(): Promise<WarmWorkspaceSlot | undefined> {
    const wanted = this.options.warmVm;
    if (!wanted) return Promise.resolve(undefined);
    this.warmCreate ??= Promise.all([import("../workspaces/warm-workspace.js"), this.workspaces]).then(
      ([{ WarmWorkspaceSlot: Slot }, ctx]) =>
        new Slot(ctx, { environment: wanted.environment, ...(wanted.minAvailableMib !== undefined ? { minAvailableMib: wanted.minAvailableMib } : {}) }),
    );
    return this.warmCreate;
  }

  /**
   * Prepares the warm VM now (with `warmVm`), instead of after the first run or create: one for
   * `kind`, by default the kind last used (a workspace before any), the other kind's thrown away;
   * resolves whether one is ready.
   */
  async warmUp(kind: "run" | "workspace" = this.warmFor): Promise<boolean> {
    this.warmFor = kind;
    // Only a slot of the other kind already made is emptied: nothing is loaded to find none. One
    // that would not go is the exit cleanup's, and does not stop this one.
    const [keep, drop] = kind === "run" ? [await this.warmSlot(), await this.warmCreate] : [await this.warmWorkspaceSlot(), await this.warm];
    await drop?.empty().catch(() => undefined);
    return (await keep?.fill()) ?? false;
  }

  /** Stops what this instance keeps running for itself (the warm VM). Workspaces are not touched. */
  async close(): Promise<void> {
    await (await this.warm)?.close();
    await (await this.warmCreate)?.close();
  }

  async listEnvironments(): Promise<EnvironmentStatus[]> {
    return new (await environments()).EnvironmentStore(this.paths).list();
  }

  async inspectEnvironment(name: string): Promise<EnvironmentStatus> {
    const store = new (await environments()).EnvironmentStore(this.paths);
    return store.status(await store.spec(name));
  }

  /**
   * Installs an environment: from a registry reference (host/repo:tag), or by catalog name — the
   * catalog's registry artifact first, a local build from Debian's mirror when the registry cannot
   * provide it (or with `build`). Also prepares the guest kernel, agent, initramfs and boot template.
   */
  async pullEnvironment(
    nameOrRef: string,
    options: {
      force?: boolean;
      build?: boolean;
      as?: string;
      onProgress?: (message: string) => void;
      onTransfer?: (label: string) => (done: number, total: number) => void;
    } = {},
  ): Promise<EnvironmentStatus> {
    const [{ EnvironmentStore }, { pullEnvironmentArtifact, registryRefFor }, { formatReference }, { findEnvironment }] = await Promise.all([
      environments(),
      artifacts(),
      references(),
      catalog(),
    ]);
    const store = new EnvironmentStore(this.paths);
    const log = options.onProgress ?? (() => undefined);
    const transfer = options.onTransfer ?? (() => () => undefined);
    let installed;
    if (nameOrRef.includes("/")) {
      installed = await pullEnvironmentArtifact(this.paths, store, nameOrRef, {
        ...(options.as ? { as: options.as } : {}),
        force: Boolean(options.force),
        progress: transfer,
        log,
      });
    } else {
      findEnvironment(nameOrRef);
      const cached = options.force ? undefined : await store.require(nameOrRef).catch(() => undefined);
      const ref = options.build || cached ? undefined : registryRefFor(nameOrRef);
      if (cached) installed = cached;
      else if (ref) {
        try {
          installed = await pullEnvironmentArtifact(this.paths, store, formatReference(ref), { progress: transfer, log });
        } catch (error) {
          log(`[pull] registry ${formatReference(ref)} cannot provide ${nameOrRef} (${(error as Error).message}); building it locally from Debian's mirror`);
        }
      }
      installed ??= await store.pull(nameOrRef, { force: Boolean(options.force), onProgress: log });
    }
    const guest = await (await runtime()).prepareGuestRuntime(this.paths, options.onProgress);
    // Warm the boot template so the first workspace create is instant too.
    log(`[pull] phase=template environment=${installed.spec.name}`);
    await (await templates()).ensureBootTemplate(this.paths, guest, installed, (await lifecycle()).WORKSPACE_DEFAULTS);
    return store.status(installed.spec);
  }

  /**
   * Turns a container image (registry reference, `docker save` archive or OCI layout) into an
   * environment named `name`, bootable like any other, and prepares its boot template.
   */
  async importEnvironment(
    source: string,
    name: string,
    options: { onProgress?: (message: string) => void; onTransfer?: (label: string) => (done: number, total: number) => void } = {},
  ): Promise<EnvironmentStatus> {
    const store = new (await environments()).EnvironmentStore(this.paths);
    const installed = await (await containerImport()).importContainerImage(this.paths, store, source, name, {
      log: options.onProgress ?? (() => undefined),
      progress: options.onTransfer ?? (() => () => undefined),
    });
    return store.status(installed.spec);
  }

  /** Publishes an installed environment to a registry as an OCI artifact. */
  async pushEnvironment(name: string, reference: string, options: { onTransfer?: (label: string) => (done: number, total: number) => void } = {}) {
    const installed = await new (await environments()).EnvironmentStore(this.paths).require(name);
    return (await artifacts()).pushEnvironment(this.paths, installed, reference, options.onTransfer ?? (() => () => undefined));
  }

  async pruneEnvironments(options: { all?: boolean } = {}): Promise<{ removed: string[] }> {
    return new (await environments()).EnvironmentStore(this.paths).prune(options);
  }

  async doctor() {
    return (await doctor()).runDoctor(this.paths);
  }

  /** warm / cold / stale for each piece the daily loop needs (environment, kernel, initramfs, template). Changes nothing. */
  async dailyLoopReadiness(environment: string, options: { network?: boolean } = {}) {
    return (await readiness()).dailyLoopReadiness(this.paths, environment, options);
  }

  /** Makes the daily loop warm for `environment` and proves it with one throwaway create → exec → reset → delete. */
  async prepare(environment: string, options: { network?: boolean; force?: boolean; onStep?: (step: LoopStep) => void } = {}) {
    return (await dailyLoop()).prepareDailyLoop(this, environment, { ...options, ...(this.options.onProgress ? { onProgress: this.options.onProgress } : {}) });
  }

  /** One workspace create → exec → delete, each step timed; always deletes what it created. */
  async demo(environment: string, options: { network?: boolean; onStep?: (step: LoopStep) => void } = {}) {
    return (await dailyLoop()).runDemo(this, environment, options);
  }

  // Workspaces: method names follow the MCP tools (workspace_create → createWorkspace, …).

  /**
   * Creates and starts a persistent workspace, seeded from a host directory or archive (seedPath),
   * else from the project this Pyro was given, else empty.
   */
  async createWorkspace(environment: string, options: CreateWorkspaceOptions = {}) {
    if (options.seedPath === undefined && options.project === undefined && this.options.project) options = { ...options, project: this.options.project };
    const warm = await this.warmWorkspaceSlot();
    const created = await (await lifecycle()).createWorkspace(await this.workspaces, environment, options, warm);
    // One warm VM at a time, of the kind last used; made after this create, not during it (they would share the CPUs).
    if (warm && created.workspace_seed.mode === "empty") void this.warmUp("workspace").catch(() => undefined);
    return created;
  }
  async listWorkspaces() {
    return (await lifecycle()).listWorkspaces(await this.workspaces);
  }
  async statusWorkspace(workspace: string) {
    return (await lifecycle()).workspaceStatus(await this.workspaces, workspace);
  }
  async updateWorkspace(workspace: string, changes: UpdateWorkspaceOptions) {
    return (await lifecycle()).updateWorkspace(await this.workspaces, workspace, changes);
  }
  async stopWorkspace(workspace: string) {
    return (await lifecycle()).stopWorkspace(await this.workspaces, workspace);
  }
  async startWorkspace(workspace: string) {
    return (await lifecycle()).startWorkspace(await this.workspaces, workspace);
  }
  async deleteWorkspace(workspace: string) {
    return (await lifecycle()).deleteWorkspace(await this.workspaces, workspace);
  }
  /**
   * New workspaces that continue from this one's current memory and disks (processes, shells and
   * services included) while it keeps running; writes afterwards are isolated both ways.
   */
  async forkWorkspace(workspace: string, options: ForkWorkspaceOptions = {}) {
    return (await fork()).forkWorkspace(await this.workspaces, workspace, options);
  }
  async summarizeWorkspace(workspace: string) {
    return (await summary()).summarizeWorkspace(await this.workspaces, workspace);
  }
  /** Runs a command in /workspace (argv, or a string for /bin/sh -c). Recorded in the command log. */
  async execWorkspace(workspace: string, command: string[] | string, options: WorkspaceExecOptions = {}) {
    return (await exec()).execInWorkspace(await this.workspaces, workspace, command, options);
  }
  async logsWorkspace(workspace: string, options: { limit?: number } = {}) {
    return (await exec()).workspaceLogs(await this.workspaces, workspace, options);
  }
  async listWorkspaceFiles(workspace: string, path = "/workspace", options: { recursive?: boolean } = {}) {
    return (await files()).listWorkspaceFiles(await this.workspaces, workspace, path, options.recursive ?? false);
  }
  async readWorkspaceFile(workspace: string, path: string, options: { maxBytes?: number } = {}) {
    return (await files()).readWorkspaceFile(await this.workspaces, workspace, path, options.maxBytes);
  }
  async writeWorkspaceFile(workspace: string, path: string, text: string) {
    return (await files()).writeWorkspaceFile(await this.workspaces, workspace, path, text);
  }
  async applyWorkspacePatch(workspace: string, patch: string) {
    return (await files()).applyWorkspacePatch(await this.workspaces, workspace, patch);
  }
  async pushWorkspaceSync(workspace: string, source: string, options: { dest?: string } = {}) {
    return (await tree()).syncPush(await this.workspaces, workspace, source, options.dest);
  }
  async diffWorkspace(workspace: string, options: DiffOptions = {}) {
    return (await tree()).diffWorkspace(await this.workspaces, workspace, options);
  }
  async exportWorkspace(workspace: string, path: string, outputPath: string) {
    return (await exporting()).exportFromWorkspace(await this.workspaces, workspace, path, outputPath);
  }
  async createSnapshot(workspace: string, name: string) {
    return (await snapshots()).createSnapshot(await this.workspaces, workspace, name);
  }
  async listSnapshots(workspace: string) {
    return (await snapshots()).listSnapshots(await this.workspaces, workspace);
  }
  async deleteSnapshot(workspace: string, name: string) {
    return (await snapshots()).deleteSnapshot(await this.workspaces, workspace, name);
  }
  /** Back to a snapshot (default: the baseline captured at create). */
  async resetWorkspace(workspace: string, options: { snapshot?: string } = {}) {
    return (await snapshots()).resetWorkspace(await this.workspaces, workspace, options.snapshot);
  }

  /** Opens an interactive bash on a PTY in the workspace; it lives until closed or the VM stops. */
  async openShell(workspace: string, options: { cwd?: string; cols?: number; rows?: number; secretEnv?: string[] } = {}) {
    return (await shells()).openShell(await this.workspaces, workspace, options);
  }
  async readShell(workspace: string, shellId: string, options: ShellReadOptions = {}) {
    return (await shells()).readShell(await this.workspaces, workspace, shellId, options);
  }
  async writeShell(workspace: string, shellId: string, input: string, options: { newline?: boolean } = {}) {
    return (await shells()).writeShell(await this.workspaces, workspace, shellId, input, options);
  }
  async signalShell(workspace: string, shellId: string, signal: ShellSignal = "INT") {
    return (await shells()).signalShell(await this.workspaces, workspace, shellId, signal);
  }
  async closeShell(workspace: string, shellId: string) {
    return (await shells()).closeShell(await this.workspaces, workspace, shellId);
  }

  /** Starts a named background service, waiting for its readiness probe when given. */
  async startService(workspace: string, name: string, command: string[] | string, options: StartServiceOptions = {}) {
    return (await services()).startService(await this.workspaces, workspace, name, command, options);
  }
  async listServices(workspace: string) {
    return (await services()).listServices(await this.workspaces, workspace);
  }
  async statusService(workspace: string, name: string) {
    return (await services()).serviceStatus(await this.workspaces, workspace, name);
  }
  async logsService(workspace: string, name: string, options: { tailLines?: number; all?: boolean } = {}) {
    return (await services()).serviceLogs(await this.workspaces, workspace, name, options);
  }
  async stopService(workspace: string, name: string) {
    return (await services()).stopService(await this.workspaces, workspace, name);
  }

  /** Offline disk tools for stopped workspaces: nothing boots, nothing is mounted on the host. */
  async listWorkspaceDisk(workspace: string, path = ".", options: { recursive?: boolean } = {}) {
    return (await disk()).diskList(await this.workspaces, workspace, path, options);
  }
  async readWorkspaceDisk(workspace: string, path: string, options: { maxBytes?: number } = {}) {
    return (await disk()).diskRead(await this.workspaces, workspace, path, options);
  }
  async exportWorkspaceDisk(workspace: string, outputPath: string) {
    return (await disk()).diskExport(await this.workspaces, workspace, outputPath);
  }
}
