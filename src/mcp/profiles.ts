import type { Surface, ToolFactory } from "./tool-definition.js";
import { snapshotCreate, snapshotDelete, snapshotList } from "./tools/snapshots.js";
import { vmRun } from "./tools/vm-run.js";
import { workspaceCreate } from "./tools/workspace-create.js";
import { workspaceDelete } from "./tools/workspace-delete.js";
import { workspaceDiff } from "./tools/workspace-diff.js";
import { workspaceExec } from "./tools/workspace-exec.js";
import { workspaceExport } from "./tools/workspace-export.js";
import { workspaceFileList } from "./tools/workspace-file-list.js";
import { workspaceFileRead } from "./tools/workspace-file-read.js";
import { workspaceFileWrite } from "./tools/workspace-file-write.js";
import { workspaceList } from "./tools/workspace-list.js";
import { workspaceLogs } from "./tools/workspace-logs.js";
import { workspacePatchApply } from "./tools/workspace-patch-apply.js";
import { workspaceReset } from "./tools/workspace-reset.js";
import { workspaceStart, workspaceStop } from "./tools/workspace-start-stop.js";
import { workspaceStatus } from "./tools/workspace-status.js";
import { workspaceSummary } from "./tools/workspace-summary.js";
import { workspaceSyncPush } from "./tools/workspace-sync-push.js";
import { workspaceUpdate } from "./tools/workspace-update.js";
import { serviceList, serviceLogs, serviceStart, serviceStatus, serviceStop } from "./tools/services.js";
import { shellClose, shellOpen, shellRead, shellSignal, shellWrite } from "./tools/shells.js";
import { workspaceDiskExport, workspaceDiskList, workspaceDiskRead } from "./tools/workspace-disk.js";

/** Every tool pyro can serve, by name. */
export const TOOL_FACTORIES: Record<string, ToolFactory> = {
  vm_run: vmRun,
  workspace_create: workspaceCreate,
  workspace_list: workspaceList,
  workspace_update: workspaceUpdate,
  workspace_status: workspaceStatus,
  workspace_sync_push: workspaceSyncPush,
  workspace_exec: workspaceExec,
  workspace_logs: workspaceLogs,
  workspace_file_list: workspaceFileList,
  workspace_file_read: workspaceFileRead,
  workspace_file_write: workspaceFileWrite,
  workspace_patch_apply: workspacePatchApply,
  workspace_diff: workspaceDiff,
  workspace_export: workspaceExport,
  workspace_reset: workspaceReset,
  workspace_delete: workspaceDelete,
  workspace_start: workspaceStart,
  workspace_stop: workspaceStop,
  workspace_summary: workspaceSummary,
  snapshot_create: snapshotCreate,
  snapshot_list: snapshotList,
  snapshot_delete: snapshotDelete,
  shell_open: shellOpen,
  shell_read: shellRead,
  shell_write: shellWrite,
  shell_signal: shellSignal,
  shell_close: shellClose,
  service_start: serviceStart,
  service_list: serviceList,
  service_status: serviceStatus,
  service_logs: serviceLogs,
  service_stop: serviceStop,
  workspace_disk_list: workspaceDiskList,
  workspace_disk_read: workspaceDiskRead,
  workspace_disk_export: workspaceDiskExport,
};

export interface ToolSet {
  tools: readonly string[];
  surface: Surface;
  /** Mode-specific wording for tools whose job differs in that workflow. */
  descriptions?: Partial<Record<string, string>>;
}

const CORE_TOOLS = [
  "vm_run",
  "workspace_create",
  "workspace_list",
  "workspace_update",
  "workspace_status",
  "workspace_sync_push",
  "workspace_exec",
  "workspace_logs",
  "workspace_file_list",
  "workspace_file_read",
  "workspace_file_write",
  "workspace_patch_apply",
  "workspace_diff",
  "workspace_export",
  "workspace_reset",
  "workspace_delete",
] as const;

export const PROFILES = {
  "vm-run": { tools: ["vm_run"], surface: { snapshots: false, machineShape: false, secretsAndNetwork: false } },
  "workspace-core": { tools: CORE_TOOLS, surface: { snapshots: false, machineShape: false, secretsAndNetwork: false } },
  "workspace-full": {
    tools: [
      ...CORE_TOOLS,
      "workspace_start", "workspace_stop", "workspace_summary",
      "snapshot_create", "snapshot_list", "snapshot_delete",
      "shell_open", "shell_read", "shell_write", "shell_signal", "shell_close",
      "service_start", "service_list", "service_status", "service_logs", "service_stop",
      "workspace_disk_list", "workspace_disk_read", "workspace_disk_export",
    ],
    surface: { snapshots: true, machineShape: true, secretsAndNetwork: true },
  },
} as const satisfies Record<string, ToolSet>;

export { DEFAULT_PROFILE, type ProfileName, type ModeName } from "./profile-names.js";
import { DEFAULT_PROFILE, type ModeName, type ProfileName } from "./profile-names.js";

/** Workflow modes: a narrowed tool set and wording for one recipe each. */
export const MODES = {
  "repro-fix": {
    tools: ["workspace_create", "workspace_list", "workspace_update", "workspace_status", "workspace_exec", "workspace_logs", "workspace_file_list", "workspace_file_read", "workspace_file_write", "workspace_patch_apply", "workspace_diff", "workspace_export", "workspace_reset", "workspace_delete"],
    surface: { snapshots: false, machineShape: false, secretsAndNetwork: false },
    descriptions: {
      workspace_create: "Start the repro-fix loop: create a workspace seeded with the project (the server's checkout unless you pass seed_path). Next: workspace_exec to reproduce the failure.",
      workspace_exec: "Reproduce the failure or re-run the tests in the workspace (cwd /workspace). After a fix, run the same command again to confirm.",
      workspace_patch_apply: "Apply your fix as a unified diff; if a hunk does not apply nothing changes. Next: workspace_exec to re-run the failing test, then workspace_diff.",
    },
  },
  inspect: {
    tools: ["workspace_create", "workspace_status", "workspace_file_list", "workspace_file_read", "workspace_exec", "workspace_logs", "workspace_export", "workspace_delete"],
    surface: { snapshots: false, machineShape: false, secretsAndNetwork: false },
    descriptions: {
      workspace_create: "Create an offline, isolated workspace holding the untrusted code to inspect (seed_path). It has no network. Next: workspace_file_list.",
      workspace_exec: "Run an inspection command on the untrusted code (grep, file, strings…). The workspace has no network and nothing leaves it unless you export it.",
    },
  },
  "cold-start": {
    tools: ["workspace_create", "workspace_status", "workspace_exec", "workspace_logs", "workspace_file_list", "workspace_file_read", "workspace_file_write", "workspace_export", "workspace_reset", "workspace_delete", "service_start", "service_status", "service_logs", "service_stop"],
    surface: { snapshots: false, machineShape: true, secretsAndNetwork: true },
    descriptions: {
      workspace_create: "Create a workspace from a fresh copy of the project (the server's checkout unless you pass seed_path) to validate that it builds and its tests pass from scratch. Next: workspace_exec with the setup steps.",
    },
  },
  "review-eval": {
    tools: ["workspace_create", "workspace_status", "workspace_exec", "workspace_logs", "workspace_file_read", "workspace_diff", "workspace_summary", "snapshot_create", "snapshot_list", "workspace_reset", "workspace_export", "workspace_delete", "shell_open", "shell_read", "shell_write", "shell_close"],
    surface: { snapshots: true, machineShape: false, secretsAndNetwork: false },
    descriptions: {
      snapshot_create: "Checkpoint the workspace before each evaluation step, so every candidate is judged from the same state.",
      workspace_summary: "Summarise the evaluation: commands run, failures, files changed since creation. Use it to write the review.",
    },
  },
} as const satisfies Record<string, ToolSet>;


/** The tool set served: a mode when given (its own narrowed set), else the profile. */
export function resolveToolSet(profile: ProfileName = DEFAULT_PROFILE, mode?: ModeName): ToolSet {
  return mode ? MODES[mode] : PROFILES[profile];
}
