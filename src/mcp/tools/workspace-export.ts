import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceExport: ToolFactory = () => ({
  name: "workspace_export",
  title: "Copy a result out to the host",
  description: "Copy a file (as itself) or a directory (as a .tar) from the workspace to a new host path. Never overwrites.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    path: z.string().describe("File or directory relative to /workspace"),
    output_path: z.string().describe("Host path to create"),
  },
  run: (a, rt) => rt.pyro.exportWorkspace(String(a.workspace_id), String(a.path), String(a.output_path)),
});
