import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceDiff = defineTool({
  name: "workspace_diff",
  title: "Diff against the baseline",
  description: "Unified diff of /workspace against its state at creation (added, deleted and binary files included). Use it to review your changes.",
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.diffWorkspace(a.workspace_id),
});
