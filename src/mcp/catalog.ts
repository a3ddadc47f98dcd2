import { serviceList, serviceLogs, serviceStart, serviceStatus, serviceStop } from "./tools/services.js";
import { shellClose, shellOpen, shellRead, shellSignal, shellWrite } from "./tools/shells.js";
import { snapshotCreate, snapshotDelete, snapshotList } from "./tools/snapshots.js";
import { vmRun } from "./tools/vm-run.js";
import { workspaceCreate } from "./tools/workspace-create.js";
import { workspaceDelete } from "./tools/workspace-delete.js";
import { workspaceDiff } from "./tools/workspace-diff.js";
import { workspaceDiskExport, workspaceDiskList, workspaceDiskRead } from "./tools/workspace-disk.js";
import { workspaceExec } from "./tools/workspace-exec.js";
import { workspaceExport } from "./tools/workspace-export.js";
import { workspaceFork } from "./tools/workspace-fork.js";
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

/**
 * Every operation pyro serves, each declared once in its tool module. The order is the order a
 * client lists them in; profiles, the README's tool table and the tests' expected lists derive
 * from this list. To add a tool: declare it with defineTool in src/mcp/tools/, add it here.
 */
export const TOOL_CATALOG = [
  vmRun,
  workspaceCreate,
  workspaceList,
  workspaceUpdate,
  workspaceStatus,
  workspaceSyncPush,
  workspaceExec,
  workspaceLogs,
  workspaceFileList,
  workspaceFileRead,
  workspaceFileWrite,
  workspacePatchApply,
  workspaceDiff,
  workspaceExport,
  workspaceReset,
  workspaceDelete,
  workspaceStart,
  workspaceStop,
  workspaceSummary,
  workspaceFork,
  snapshotCreate,
  snapshotList,
  snapshotDelete,
  shellOpen,
  shellRead,
  shellWrite,
  shellSignal,
  shellClose,
  serviceStart,
  serviceList,
  serviceStatus,
  serviceLogs,
  serviceStop,
  workspaceDiskList,
  workspaceDiskRead,
  workspaceDiskExport,
] as const;

export type ToolName = (typeof TOOL_CATALOG)[number]["name"];
export type CatalogTool = (typeof TOOL_CATALOG)[number];

const BY_NAME = new Map<string, CatalogTool>(TOOL_CATALOG.map((tool) => [tool.name, tool]));

/** The catalogue's tool of that name. */
export function catalogTool(name: ToolName): CatalogTool {
  return BY_NAME.get(name)!;
}
