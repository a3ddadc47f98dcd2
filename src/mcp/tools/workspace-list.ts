import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceList = defineTool({
  name: "workspace_list",
  title: "List workspaces",
  description: "List existing workspaces (id, name, labels, state, last activity), most recently used first. Use it to find a workspace again.",
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: {},
  run: (_a, rt) => rt.pyro.listWorkspaces(),
});
