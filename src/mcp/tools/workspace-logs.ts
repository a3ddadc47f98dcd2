import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceLogs: ToolFactory = () => ({
  name: "workspace_logs",
  title: "Command history",
  description: "Show the commands run in a workspace with exit codes, durations and (truncated) output.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    limit: z.number().int().positive().optional().describe("Only the last N commands"),
  },
  run: (a, rt) => rt.pyro.logsWorkspace(String(a.workspace_id), a.limit ? { limit: Number(a.limit) } : {}),
});
