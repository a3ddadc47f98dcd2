import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceStart = defineTool({
  name: "workspace_start",
  title: "Start a stopped workspace",
  description: "Boot a stopped workspace from its disk (files kept, processes start fresh).",
  profile: "workspace-full",
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true },
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.startWorkspace(a.workspace_id),
});

export const workspaceStop = defineTool({
  name: "workspace_stop",
  title: "Stop a workspace",
  description: "Stop the workspace's VM to free memory; files are kept. Next: workspace_start to continue.",
  profile: "workspace-full",
  // Files survive, but every process in the VM ends.
  annotations: destructive(true),
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.stopWorkspace(a.workspace_id),
});
