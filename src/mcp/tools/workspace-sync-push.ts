import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceSyncPush: ToolFactory = () => ({
  name: "workspace_sync_push",
  title: "Copy host files into a workspace",
  description: "Copy a host directory or .tar/.tgz archive into the workspace (into /workspace, or dest under it). Hostile archives are refused.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    source_path: z.string().describe("Host directory or archive"),
    dest: z.string().optional().describe("Destination relative to /workspace"),
  },
  run: (a, rt) => rt.pyro.pushWorkspaceSync(String(a.workspace_id), String(a.source_path), a.dest ? { dest: String(a.dest) } : {}),
});
