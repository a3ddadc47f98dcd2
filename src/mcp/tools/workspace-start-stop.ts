import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceStop: ToolFactory = () => ({
  name: "workspace_stop",
  title: "Stop a workspace",
  description: "Stop the workspace's VM to free memory; files are kept. Next: workspace_start to continue.",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.stopWorkspace(String(a.workspace_id)),
});

export const workspaceStart: ToolFactory = () => ({
  name: "workspace_start",
  title: "Start a stopped workspace",
  description: "Boot a stopped workspace from its disk (files kept, processes start fresh).",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.startWorkspace(String(a.workspace_id)),
});
