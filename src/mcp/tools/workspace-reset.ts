import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceReset = defineTool({
  name: "workspace_reset",
  title: "Reset a workspace",
  description: "Put the workspace back to its state at creation, files and processes; takes well under a second. Use it to retry from a clean start.",
  describe: (surface) =>
    surface.snapshots
      ? "Put the workspace back to a snapshot (default: its state at creation), files and processes; takes well under a second. Use it to retry from a clean point."
      : undefined,
  profile: "workspace-core",
  annotations: destructive(true),
  input: {
    workspace_id: workspaceId,
    snapshot: z.string().default("baseline").describe("Snapshot name (see snapshot_list)"),
  },
  gated: { snapshots: ["snapshot"] },
  run: (a, rt) => rt.pyro.resetWorkspace(a.workspace_id, a.snapshot ? { snapshot: a.snapshot } : {}),
});
