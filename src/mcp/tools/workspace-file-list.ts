import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceFileList = defineTool({
  name: "workspace_file_list",
  title: "List files",
  description: "List files under a directory of the workspace (relative to /workspace). Next: workspace_file_read.",
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: {
    workspace_id: workspaceId,
    path: z.string().default(".").describe("Directory relative to /workspace"),
    recursive: z.boolean().default(false),
  },
  run: (a, rt) => rt.pyro.listWorkspaceFiles(a.workspace_id, a.path, { recursive: a.recursive }),
});
