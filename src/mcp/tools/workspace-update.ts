import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceUpdate: ToolFactory = () => ({
  name: "workspace_update",
  title: "Rename or relabel a workspace",
  description: "Change a workspace's name or labels (the id never changes).",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    name: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional().describe("Labels to set"),
    clear_labels: z.array(z.string()).optional().describe("Label keys to remove"),
  },
  run: (a, rt) =>
    rt.pyro.updateWorkspace(String(a.workspace_id), {
      ...(a.name !== undefined ? { name: String(a.name) } : {}),
      ...(a.labels ? { labels: a.labels as Record<string, string> } : {}),
      ...(a.clear_labels ? { clearLabels: a.clear_labels as string[] } : {}),
    }),
});
