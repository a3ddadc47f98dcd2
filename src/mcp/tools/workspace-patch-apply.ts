import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspacePatchApply = defineTool({
  name: "workspace_patch_apply",
  title: "Apply a unified diff",
  description:
    "Apply a unified diff (paths relative to /workspace; a/ b/ prefixes fine; several files, creations and deletions). " +
    "If any hunk does not apply, nothing changes and the error names the hunk. Next: workspace_exec to re-run tests.",
  profile: "workspace-core",
  annotations: destructive(false),
  input: {
    workspace_id: workspaceId,
    patch: z.string().describe("Unified diff text"),
  },
  run: (a, rt) => rt.pyro.applyWorkspacePatch(a.workspace_id, a.patch),
});
