import { z } from "zod";
import { PyroError } from "../../errors.js";
import type { ToolFactory } from "../tool-definition.js";

/** The contract names the argument snapshot_name; `name` is kept for clients written against earlier pyro. */
function snapshotNameOf(a: Record<string, unknown>): string {
  const { snapshot_name: contractName, name } = a;
  if ((contractName === undefined) === (name === undefined)) {
    throw new PyroError("INVALID_ARGUMENT", "give the snapshot's name as snapshot_name (exactly one of snapshot_name or name)");
  }
  return String(contractName ?? name);
}

export const snapshotCreate: ToolFactory = () => ({
  name: "snapshot_create",
  title: "Snapshot a workspace",
  description: "Save the workspace's current state (files and memory) under a name, to come back to with workspace_reset.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    snapshot_name: z.string().optional().describe("Snapshot name"),
    name: z.string().optional().describe("Same as snapshot_name (older spelling)"),
  },
  run: (a, rt) => rt.pyro.createSnapshot(String(a.workspace_id), snapshotNameOf(a)),
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
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    snapshot_name: z.string().optional().describe("Snapshot name"),
    name: z.string().optional().describe("Same as snapshot_name (older spelling)"),
  },
  run: (a, rt) => rt.pyro.deleteSnapshot(String(a.workspace_id), snapshotNameOf(a)),
});
