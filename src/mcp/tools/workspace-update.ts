import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceUpdate = defineTool({
  name: "workspace_update",
  title: "Rename or relabel a workspace",
  description: "Change a workspace's name or labels (the id never changes).",
  profile: "workspace-core",
  annotations: destructive(true),
  input: {
    workspace_id: workspaceId,
    name: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional().describe("Labels to set"),
    clear_labels: z.array(z.string()).optional().describe("Label keys to remove"),
  },
  run: (a, rt) =>
    rt.pyro.updateWorkspace(a.workspace_id, {
      ...(a.name !== undefined ? { name: a.name } : {}),
      ...(a.labels ? { labels: a.labels } : {}),
      ...(a.clear_labels ? { clearLabels: a.clear_labels } : {}),
    }),
});
