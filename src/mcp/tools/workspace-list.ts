import type { ToolFactory } from "../tool-definition.js";

export const workspaceList: ToolFactory = () => ({
  name: "workspace_list",
  title: "List workspaces",
  description: "List existing workspaces (id, name, labels, state, last activity), most recently used first. Use it to find a workspace again.",
  inputSchema: {},
  run: (_a, rt) => rt.pyro.listWorkspaces(),
});
