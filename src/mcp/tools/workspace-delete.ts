import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceDelete = defineTool({
  name: "workspace_delete",
  title: "Delete a workspace",
  description: "Delete the workspace, its VM and all its files. Export anything you need first (workspace_export).",
  profile: "workspace-core",
  annotations: destructive(true),
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.deleteWorkspace(a.workspace_id),
});
