import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { ADDITIVE, defineTool } from "../tool-definition.js";

export const workspaceExport = defineTool({
  name: "workspace_export",
  title: "Copy a result out to the host",
  description: "Copy a file (as itself) or a directory (as a .tar) from the workspace to a new host path. Never overwrites.",
  profile: "workspace-core",
  annotations: ADDITIVE,
  input: {
    workspace_id: workspaceId,
    path: z.string().describe("File or directory relative to /workspace"),
    output_path: z.string().describe("Host path to create"),
  },
  run: (a, rt) => rt.pyro.exportWorkspace(a.workspace_id, a.path, a.output_path),
});
