import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceLogs = defineTool({
  name: "workspace_logs",
  title: "Command history",
  description: "Show the commands run in a workspace with exit codes, durations and (truncated) output.",
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: {
    workspace_id: workspaceId,
    limit: z.number().int().positive().optional().describe("Only the last N commands"),
  },
  run: (a, rt) => rt.pyro.logsWorkspace(a.workspace_id, a.limit !== undefined ? { limit: a.limit } : {}),
});
