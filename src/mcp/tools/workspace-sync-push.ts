import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceSyncPush = defineTool({
  name: "workspace_sync_push",
  title: "Copy host files into a workspace",
  description: "Copy a host directory or .tar/.tgz archive into the workspace (into /workspace, or dest under it). Hostile archives are refused.",
  profile: "workspace-core",
  annotations: destructive(true),
  input: {
    workspace_id: workspaceId,
    source_path: z.string().describe("Host directory or archive"),
    dest: z.string().optional().describe("Destination relative to /workspace"),
  },
  run: (a, rt) => rt.pyro.pushWorkspaceSync(a.workspace_id, a.source_path, a.dest ? { dest: a.dest } : {}),
});
