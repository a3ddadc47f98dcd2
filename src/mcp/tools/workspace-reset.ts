import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceReset: ToolFactory = (surface) => ({
  name: "workspace_reset",
  title: "Reset a workspace",
  description: surface.snapshots
    ? "Put the workspace back to a snapshot (default: its state at creation), files and processes; takes well under a second. Use it to retry from a clean point."
    : "Put the workspace back to its state at creation, files and processes; takes well under a second. Use it to retry from a clean start.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    ...(surface.snapshots ? { snapshot: z.string().default("baseline").describe("Snapshot name (see snapshot_list)") } : {}),
  },
  run: (a, rt) => rt.pyro.resetWorkspace(String(a.workspace_id), a.snapshot ? { snapshot: String(a.snapshot) } : {}),
});
