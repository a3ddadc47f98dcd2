import { findEnvironment } from "../environments/catalog.js";
import { EnvironmentStore, type EnvironmentStatus } from "../environments/environment-store.js";
import { pullEnvironmentArtifact, pushEnvironment, registryRefFor } from "../environments/environment-artifact.js";
import { formatReference } from "../registry/image-reference.js";
import { importContainerImage } from "../environments/container-import.js";
import { runDoctor, type DoctorReport } from "../doctor/doctor.js";
import { resolvePaths, type PyroPaths } from "../paths.js";
import { prepareGuestRuntime } from "../runtime/guest-runtime.js";
import { runOneShot } from "../vm-run/one-shot-run.js";
import type { RunOptions, RunResult } from "../vm-run/run-result.js";
import { ensureBootTemplate } from "../workspaces/boot-templates.js";
import { WorkspaceContext } from "../workspaces/workspace-context.js";
import { execInWorkspace, workspaceLogs, type WorkspaceExecOptions } from "../workspaces/workspace-exec.js";
import { applyWorkspacePatch, listWorkspaceFiles, readWorkspaceFile, writeWorkspaceFile } from "../workspaces/workspace-files.js";
import {
  createWorkspace,
  deleteWorkspace,
  listWorkspaces,
  startWorkspace,
  stopWorkspace,
  updateWorkspace,
  workspaceStatus,
  WORKSPACE_DEFAULTS,
  type CreateWorkspaceOptions,
  type UpdateWorkspaceOptions,
} from "../workspaces/workspace-lifecycle.js";
import { createSnapshot, deleteSnapshot, listSnapshots, resetWorkspace } from "../workspaces/workspace-snapshots.js";
import { summarizeWorkspace } from "../workspaces/workspace-summary.js";
import { diskExport, diskList, diskRead } from "../workspaces/workspace-disk.js";
import { listServices, serviceLogs, serviceStatus, startService, stopService, type StartServiceOptions } from "../workspaces/workspace-services.js";
import { closeShell, openShell, readShell, signalShell, writeShell, type ShellReadOptions } from "../workspaces/workspace-shells.js";
import { diffWorkspace, exportFromWorkspace, syncPush } from "../workspaces/workspace-tree.js";

export interface PyroOptions {
  /** Put all caches and state under this directory (same as PYRO_HOME). */
  home?: string;
  /** Receives progress lines (kernel download, environment build…). */
  onProgress?: (message: string) => void;
}

/** The pyro SDK: the same operations as the CLI and the MCP tools, returning the same structures. */
export class Pyro {
  readonly paths: PyroPaths;
  private readonly workspaces: WorkspaceContext;

  constructor(options: PyroOptions = {}) {
    this.paths = resolvePaths(options.home ? { ...process.env, PYRO_HOME: options.home } : process.env);
    this.workspaces = new WorkspaceContext(this.paths, options.onProgress);
  }

  /** Runs one command in a disposable microVM and destroys it. `command` is argv (no shell). */
  run(environment: string, command: string[], options: RunOptions = {}): Promise<RunResult> {
    return runOneShot(this.paths, environment, command, options);
  }

  listEnvironments(): Promise<EnvironmentStatus[]> {
    return new EnvironmentStore(this.paths).list();
  }

  async inspectEnvironment(name: string): Promise<EnvironmentStatus> {
    const store = new EnvironmentStore(this.paths);
    return store.status(await store.spec(name));
  }

  /**
   * Installs an environment: from a registry reference (host/repo:tag), or by catalog name — the
   * catalog's registry artifact first, a local build from Debian's mirror when the registry cannot
   * provide it (or with `build`). Also prepares the guest kernel, agent, initramfs and boot template.
   */
  async pullEnvironment(
    nameOrRef: string,
    options: { force?: boolean; build?: boolean; as?: string; onProgress?: (message: string) => void; onTransfer?: (label: string) => (done: number, total: number) => void } = {},
  ): Promise<EnvironmentStatus> {
    const store = new EnvironmentStore(this.paths);
    const log = options.onProgress ?? (() => undefined);
    const transfer = options.onTransfer ?? (() => () => undefined);
    let installed;
    if (nameOrRef.includes("/")) {
      installed = await pullEnvironmentArtifact(this.paths, store, nameOrRef, { ...(options.as ? { as: options.as } : {}), force: Boolean(options.force), progress: transfer, log });
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
    const runtime = await prepareGuestRuntime(this.paths, options.onProgress);
    // Warm the boot template so the first workspace create is instant too.
    log(`[pull] phase=template environment=${installed.spec.name}`);
    await ensureBootTemplate(this.paths, runtime, installed, WORKSPACE_DEFAULTS);
    return store.status(installed.spec);
  }

  /**
   * Turns a container image (registry reference, `docker save` archive or OCI layout) into an
   * environment named `name`, bootable like any other, and prepares its boot template.
   */
  async importEnvironment(source: string, name: string, options: { onProgress?: (message: string) => void; onTransfer?: (label: string) => (done: number, total: number) => void } = {}): Promise<EnvironmentStatus> {
    const store = new EnvironmentStore(this.paths);
    const installed = await importContainerImage(this.paths, store, source, name, { log: options.onProgress ?? (() => undefined), progress: options.onTransfer ?? (() => () => undefined) });
    return store.status(installed.spec);
  }

  /** Publishes an installed environment to a registry as an OCI artifact. */
  async pushEnvironment(name: string, reference: string, options: { onTransfer?: (label: string) => (done: number, total: number) => void } = {}) {
    const installed = await new EnvironmentStore(this.paths).require(name);
    return pushEnvironment(this.paths, installed, reference, options.onTransfer ?? (() => () => undefined));
  }

  pruneEnvironments(options: { all?: boolean } = {}): Promise<{ removed: string[] }> {
    return new EnvironmentStore(this.paths).prune(options);
  }

  doctor(): Promise<DoctorReport> {
    return runDoctor(this.paths);
  }

  // Workspaces: method names follow the MCP tools (workspace_create → createWorkspace, …).

  /** Creates and starts a persistent workspace, optionally seeded from a host directory or archive. */
  createWorkspace(environment: string, options: CreateWorkspaceOptions = {}) {
    return createWorkspace(this.workspaces, environment, options);
  }
  listWorkspaces() {
    return listWorkspaces(this.workspaces);
  }
  statusWorkspace(workspace: string) {
    return workspaceStatus(this.workspaces, workspace);
  }
  updateWorkspace(workspace: string, changes: UpdateWorkspaceOptions) {
    return updateWorkspace(this.workspaces, workspace, changes);
  }
  stopWorkspace(workspace: string) {
    return stopWorkspace(this.workspaces, workspace);
  }
  startWorkspace(workspace: string) {
    return startWorkspace(this.workspaces, workspace);
  }
  deleteWorkspace(workspace: string) {
    return deleteWorkspace(this.workspaces, workspace);
  }
  summarizeWorkspace(workspace: string) {
    return summarizeWorkspace(this.workspaces, workspace);
  }
  /** Runs a command in /workspace (argv, or a string for /bin/sh -c). Recorded in the command log. */
  execWorkspace(workspace: string, command: string[] | string, options: WorkspaceExecOptions = {}) {
    return execInWorkspace(this.workspaces, workspace, command, options);
  }
  logsWorkspace(workspace: string, options: { limit?: number } = {}) {
    return workspaceLogs(this.workspaces, workspace, options);
  }
  listWorkspaceFiles(workspace: string, path = "/workspace", options: { recursive?: boolean } = {}) {
    return listWorkspaceFiles(this.workspaces, workspace, path, options.recursive ?? false);
  }
  readWorkspaceFile(workspace: string, path: string, options: { maxBytes?: number } = {}) {
    return readWorkspaceFile(this.workspaces, workspace, path, options.maxBytes);
  }
  writeWorkspaceFile(workspace: string, path: string, text: string) {
    return writeWorkspaceFile(this.workspaces, workspace, path, text);
  }
  applyWorkspacePatch(workspace: string, patch: string) {
    return applyWorkspacePatch(this.workspaces, workspace, patch);
  }
  pushWorkspaceSync(workspace: string, source: string, options: { dest?: string } = {}) {
    return syncPush(this.workspaces, workspace, source, options.dest);
  }
  diffWorkspace(workspace: string) {
    return diffWorkspace(this.workspaces, workspace);
  }
  exportWorkspace(workspace: string, path: string, outputPath: string) {
    return exportFromWorkspace(this.workspaces, workspace, path, outputPath);
  }
  createSnapshot(workspace: string, name: string) {
    return createSnapshot(this.workspaces, workspace, name);
  }
  listSnapshots(workspace: string) {
    return listSnapshots(this.workspaces, workspace);
  }
  deleteSnapshot(workspace: string, name: string) {
    return deleteSnapshot(this.workspaces, workspace, name);
  }
  /** Back to a snapshot (default: the baseline captured at create). */
  resetWorkspace(workspace: string, options: { snapshot?: string } = {}) {
    return resetWorkspace(this.workspaces, workspace, options.snapshot);
  }

  /** Opens an interactive bash on a PTY in the workspace; it lives until closed or the VM stops. */
  openShell(workspace: string, options: { cwd?: string; cols?: number; rows?: number; secretEnv?: string[] } = {}) {
    return openShell(this.workspaces, workspace, options);
  }
  readShell(workspace: string, shellId: string, options: ShellReadOptions = {}) {
    return readShell(this.workspaces, workspace, shellId, options);
  }
  writeShell(workspace: string, shellId: string, input: string, options: { newline?: boolean } = {}) {
    return writeShell(this.workspaces, workspace, shellId, input, options);
  }
  signalShell(workspace: string, shellId: string, signal: "INT" | "TERM" | "KILL" | "HUP" = "INT") {
    return signalShell(this.workspaces, workspace, shellId, signal);
  }
  closeShell(workspace: string, shellId: string) {
    return closeShell(this.workspaces, workspace, shellId);
  }

  /** Starts a named background service, waiting for its readiness probe when given. */
  startService(workspace: string, name: string, command: string[] | string, options: StartServiceOptions = {}) {
    return startService(this.workspaces, workspace, name, command, options);
  }
  listServices(workspace: string) {
    return listServices(this.workspaces, workspace);
  }
  statusService(workspace: string, name: string) {
    return serviceStatus(this.workspaces, workspace, name);
  }
  logsService(workspace: string, name: string, options: { tailLines?: number; all?: boolean } = {}) {
    return serviceLogs(this.workspaces, workspace, name, options);
  }
  stopService(workspace: string, name: string) {
    return stopService(this.workspaces, workspace, name);
  }

  /** Offline disk tools for stopped workspaces: nothing boots, nothing is mounted on the host. */
  listWorkspaceDisk(workspace: string, path = ".", options: { recursive?: boolean } = {}) {
    return diskList(this.workspaces, workspace, path, options);
  }
  readWorkspaceDisk(workspace: string, path: string, options: { maxBytes?: number } = {}) {
    return diskRead(this.workspaces, workspace, path, options);
  }
  exportWorkspaceDisk(workspace: string, outputPath: string) {
    return diskExport(this.workspaces, workspace, outputPath);
  }
}
