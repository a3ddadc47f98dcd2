import type { Pyro } from "./pyro.js";

/** What a Pyro method resolves to: the same structure the matching CLI `--json` and MCP tool return. */
export type PyroResult<Method extends keyof Pyro> = Pyro[Method] extends (...args: never[]) => Promise<infer Result> ? Result : never;

// Named for the MCP tools they back (workspace_create → WorkspaceCreateResult, …).
export type EnvironmentPruneResult = PyroResult<"pruneEnvironments">;
export type DailyLoopReadiness = PyroResult<"dailyLoopReadiness">;
export type PrepareResult = PyroResult<"prepare">;
export type DemoResult = PyroResult<"demo">;
export type WorkspaceCreateResult = PyroResult<"createWorkspace">;
export type WorkspaceListResult = PyroResult<"listWorkspaces">;
export type WorkspaceStatusResult = PyroResult<"statusWorkspace">;
export type WorkspaceUpdateResult = PyroResult<"updateWorkspace">;
export type WorkspaceStopResult = PyroResult<"stopWorkspace">;
export type WorkspaceStartResult = PyroResult<"startWorkspace">;
export type WorkspaceDeleteResult = PyroResult<"deleteWorkspace">;
export type WorkspaceSummaryResult = PyroResult<"summarizeWorkspace">;
export type WorkspaceExecResult = PyroResult<"execWorkspace">;
export type WorkspaceLogsResult = PyroResult<"logsWorkspace">;
export type WorkspaceFileListResult = PyroResult<"listWorkspaceFiles">;
export type WorkspaceFileReadResult = PyroResult<"readWorkspaceFile">;
export type WorkspaceFileWriteResult = PyroResult<"writeWorkspaceFile">;
export type WorkspacePatchApplyResult = PyroResult<"applyWorkspacePatch">;
export type WorkspaceSyncPushResult = PyroResult<"pushWorkspaceSync">;
export type WorkspaceDiffResult = PyroResult<"diffWorkspace">;
export type WorkspaceExportResult = PyroResult<"exportWorkspace">;
export type WorkspaceResetResult = PyroResult<"resetWorkspace">;
export type SnapshotCreateResult = PyroResult<"createSnapshot">;
export type SnapshotListResult = PyroResult<"listSnapshots">;
export type SnapshotDeleteResult = PyroResult<"deleteSnapshot">;
export type ShellOpenResult = PyroResult<"openShell">;
export type ShellReadResult = PyroResult<"readShell">;
export type ShellWriteResult = PyroResult<"writeShell">;
export type ShellSignalResult = PyroResult<"signalShell">;
export type ShellCloseResult = PyroResult<"closeShell">;
export type ServiceStartResult = PyroResult<"startService">;
export type ServiceListResult = PyroResult<"listServices">;
export type ServiceStatusResult = PyroResult<"statusService">;
export type ServiceLogsResult = PyroResult<"logsService">;
export type ServiceStopResult = PyroResult<"stopService">;
export type WorkspaceDiskListResult = PyroResult<"listWorkspaceDisk">;
export type WorkspaceDiskReadResult = PyroResult<"readWorkspaceDisk">;
export type WorkspaceDiskExportResult = PyroResult<"exportWorkspaceDisk">;
