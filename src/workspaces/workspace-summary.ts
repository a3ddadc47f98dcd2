import { workspaceLogs } from "./workspace-exec.js";
import { workspaceStatus, type WorkspaceView } from "./workspace-lifecycle.js";
import { diffWorkspace, type DiffResult } from "./workspace-tree.js";
import type { WorkspaceContext } from "./workspace-context.js";

export interface WorkspaceSummary {
  workspace: WorkspaceView;
  commands: { count: number; failed: number; recent: { sequence: number; command: string[] | string; exit_code: number; duration_ms: number }[] };
  changes: (DiffResult["summary"] & { files: DiffResult["files"] }) | null;
  snapshots: string[];
  /** Per scoped secret: hosts its value was sent to, refused requests (never a value). */
  secrets?: NonNullable<Awaited<ReturnType<typeof workspaceLogs>>["secrets"]>;
}

/** One review-friendly view: what ran, what changed since the baseline, which snapshots exist. */
export async function summarizeWorkspace(ctx: WorkspaceContext, ref: string): Promise<WorkspaceSummary> {
  const workspace = await workspaceStatus(ctx, ref);
  const logs = await workspaceLogs(ctx, workspace.workspace_id);
  const diff = workspace.state === "running" ? await diffWorkspace(ctx, workspace.workspace_id) : undefined;
  return {
    workspace,
    commands: {
      count: logs.count,
      failed: logs.commands.filter((c) => c.exit_code !== 0).length,
      recent: logs.commands.slice(-10).map(({ sequence, command, exit_code, duration_ms }) => ({ sequence, command, exit_code, duration_ms })),
    },
    changes: diff ? { ...diff.summary, files: diff.files } : null,
    snapshots: workspace.snapshots,
    ...(logs.secrets ? { secrets: logs.secrets } : {}),
  };
}
