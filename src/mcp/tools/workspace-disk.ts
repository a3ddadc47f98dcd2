import { z } from "zod";
import { FILE_READ_DEFAULT_MAX_BYTES, FILE_READ_MAX_BYTES } from "../../workspaces/workspace-limits.js";
import { ADDITIVE, defineTool, READ_ONLY } from "../tool-definition.js";

const stoppedWorkspaceId = z.string().describe("Workspace id or name (must be stopped)");

export const workspaceDiskList = defineTool({
  name: "workspace_disk_list",
  title: "List files on a stopped workspace's disk",
  description: "List files of a STOPPED workspace without booting it (offline). For running workspaces use workspace_file_list.",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: { workspace_id: stoppedWorkspaceId, path: z.string().default("."), recursive: z.boolean().default(false) },
  run: (a, rt) => rt.pyro.listWorkspaceDisk(a.workspace_id, a.path, { recursive: a.recursive }),
});

export const workspaceDiskRead = defineTool({
  name: "workspace_disk_read",
  title: "Read a file from a stopped workspace's disk",
  description: "Read a file of a STOPPED workspace without booting it (offline).",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: {
    workspace_id: stoppedWorkspaceId,
    path: z.string(),
    max_bytes: z.number().int().positive().max(FILE_READ_MAX_BYTES).default(FILE_READ_DEFAULT_MAX_BYTES),
  },
  run: (a, rt) => rt.pyro.readWorkspaceDisk(a.workspace_id, a.path, { maxBytes: a.max_bytes }),
});

export const workspaceDiskExport = defineTool({
  name: "workspace_disk_export",
  title: "Export a stopped workspace's disk",
  description: "Write a STOPPED workspace's filesystem to a new host file as a raw ext4 image (pyro's runtime state and secrets removed).",
  profile: "workspace-full",
  annotations: ADDITIVE,
  input: { workspace_id: stoppedWorkspaceId, output_path: z.string().describe("Host path to create") },
  run: (a, rt) => rt.pyro.exportWorkspaceDisk(a.workspace_id, a.output_path),
});
