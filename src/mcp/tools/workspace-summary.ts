import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceSummary = defineTool({
  name: "workspace_summary",
  title: "Summarise a workspace",
  description: "Review in one call: commands run (failures counted), files changed since creation, snapshots.",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.summarizeWorkspace(a.workspace_id),
});
