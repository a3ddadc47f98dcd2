import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceFileList: ToolFactory = () => ({
  name: "workspace_file_list",
  title: "List files",
  description: "List files under a directory of the workspace (relative to /workspace). Next: workspace_file_read.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    path: z.string().default(".").describe("Directory relative to /workspace"),
    recursive: z.boolean().default(false),
  },
  run: (a, rt) => rt.pyro.listWorkspaceFiles(String(a.workspace_id), String(a.path), { recursive: Boolean(a.recursive) }),
});
