import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const snapshotCreate: ToolFactory = () => ({
  name: "snapshot_create",
  title: "Snapshot a workspace",
  description: "Save the workspace's current state (files and memory) under a name, to come back to with workspace_reset.",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name"), name: z.string().describe("Snapshot name") },
  run: (a, rt) => rt.pyro.createSnapshot(String(a.workspace_id), String(a.name)),
});

export const snapshotList: ToolFactory = () => ({
  name: "snapshot_list",
  title: "List snapshots",
  description: "List a workspace's snapshots ('baseline' is its state at creation).",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.listSnapshots(String(a.workspace_id)),
});

export const snapshotDelete: ToolFactory = () => ({
  name: "snapshot_delete",
  title: "Delete a snapshot",
  description: "Delete a named snapshot (not 'baseline').",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name"), name: z.string().describe("Snapshot name") },
  run: (a, rt) => rt.pyro.deleteSnapshot(String(a.workspace_id), String(a.name)),
});
