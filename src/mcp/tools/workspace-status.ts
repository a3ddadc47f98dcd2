import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceStatus: ToolFactory = () => ({
  name: "workspace_status",
  title: "Workspace status",
  description: "Show one workspace: running or stopped, environment, command count, snapshots, host disk used.",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.statusWorkspace(String(a.workspace_id)),
});
