import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceStatus = defineTool({
  name: "workspace_status",
  title: "Workspace status",
  description: "Show one workspace: running or stopped, environment, command count, snapshots, host disk used.",
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.statusWorkspace(a.workspace_id),
});
