import { z } from "zod";
import { PyroError } from "../../errors.js";
import { workspaceId } from "../tool-arguments.js";
import { ADDITIVE, defineTool, destructive, READ_ONLY } from "../tool-definition.js";

/** The contract names the argument snapshot_name; `name` is kept for clients written against earlier pyro. */
const snapshotNames = {
  snapshot_name: z.string().optional().describe("Snapshot name"),
  name: z.string().optional().describe("Same as snapshot_name (older spelling)"),
};

function snapshotNameOf(a: { snapshot_name?: string | undefined; name?: string | undefined }): string {
  const given = a.snapshot_name ?? a.name;
  if (given === undefined || (a.snapshot_name !== undefined && a.name !== undefined)) {
    throw new PyroError("INVALID_ARGUMENT", "give the snapshot's name as snapshot_name (exactly one of snapshot_name or name)");
  }
  return given;
}

export const snapshotCreate = defineTool({
  name: "snapshot_create",
  title: "Snapshot a workspace",
  description: "Save the workspace's current state (files and memory) under a name, to come back to with workspace_reset.",
  profile: "workspace-full",
  annotations: ADDITIVE,
  input: { workspace_id: workspaceId, ...snapshotNames },
  run: (a, rt) => rt.pyro.createSnapshot(a.workspace_id, snapshotNameOf(a)),
});

export const snapshotList = defineTool({
  name: "snapshot_list",
  title: "List snapshots",
  description: "List a workspace's snapshots ('baseline' is its state at creation).",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.listSnapshots(a.workspace_id),
});

export const snapshotDelete = defineTool({
  name: "snapshot_delete",
  title: "Delete a snapshot",
  description: "Delete a named snapshot (not 'baseline').",
  profile: "workspace-full",
  annotations: destructive(true),
  input: { workspace_id: workspaceId, ...snapshotNames },
  run: (a, rt) => rt.pyro.deleteSnapshot(a.workspace_id, snapshotNameOf(a)),
});
