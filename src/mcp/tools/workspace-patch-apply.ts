import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspacePatchApply: ToolFactory = () => ({
  name: "workspace_patch_apply",
  title: "Apply a unified diff",
  description:
    "Apply a unified diff (paths relative to /workspace; a/ b/ prefixes fine; several files, creations and deletions). " +
    "If any hunk does not apply, nothing changes and the error names the hunk. Next: workspace_exec to re-run tests.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    patch: z.string().describe("Unified diff text"),
  },
  run: (a, rt) => rt.pyro.applyWorkspacePatch(String(a.workspace_id), String(a.patch)),
});
