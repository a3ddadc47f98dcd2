import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceDelete: ToolFactory = () => ({
  name: "workspace_delete",
  title: "Delete a workspace",
  description: "Delete the workspace, its VM and all its files. Export anything you need first (workspace_export).",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.deleteWorkspace(String(a.workspace_id)),
});
