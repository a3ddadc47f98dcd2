import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

const ws = z.string().describe("Workspace id or name (must be stopped)");

export const workspaceDiskList: ToolFactory = () => ({
  name: "workspace_disk_list",
  title: "List files on a stopped workspace's disk",
  description: "List files of a STOPPED workspace without booting it (offline). For running workspaces use workspace_file_list.",
  inputSchema: { workspace_id: ws, path: z.string().default("."), recursive: z.boolean().default(false) },
  run: (a, rt) => rt.pyro.listWorkspaceDisk(String(a.workspace_id), String(a.path), { recursive: Boolean(a.recursive) }),
});

export const workspaceDiskRead: ToolFactory = () => ({
  name: "workspace_disk_read",
  title: "Read a file from a stopped workspace's disk",
  description: "Read a file of a STOPPED workspace without booting it (offline).",
  inputSchema: { workspace_id: ws, path: z.string(), max_bytes: z.number().int().positive().default(65_536) },
  run: (a, rt) => rt.pyro.readWorkspaceDisk(String(a.workspace_id), String(a.path), { maxBytes: Number(a.max_bytes) }),
});

export const workspaceDiskExport: ToolFactory = () => ({
  name: "workspace_disk_export",
  title: "Export a stopped workspace's disk",
  description: "Write a STOPPED workspace's filesystem to a new host file as a raw ext4 image (pyro's runtime state and secrets removed).",
  inputSchema: { workspace_id: ws, output_path: z.string().describe("Host path to create") },
  run: (a, rt) => rt.pyro.exportWorkspaceDisk(String(a.workspace_id), String(a.output_path)),
});
