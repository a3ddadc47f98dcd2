import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceDiff: ToolFactory = () => ({
  name: "workspace_diff",
  title: "Diff against the baseline",
  description: "Unified diff of /workspace against its state at creation (added, deleted and binary files included). Use it to review your changes.",
  inputSchema: { workspace_id: z.string().describe("Workspace id or name") },
  run: (a, rt) => rt.pyro.diffWorkspace(String(a.workspace_id)),
});
