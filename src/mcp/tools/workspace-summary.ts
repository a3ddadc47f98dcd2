import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceSummary: ToolFactory = () => ({
  name: "workspace_summary",
  title: "Summarise a workspace",
  description: "Review in one call: commands run (failures counted), files changed since creation, snapshots.",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.summarizeWorkspace(String(a.workspace_id)),
});
