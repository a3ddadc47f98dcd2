import { z } from "zod";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceFileWrite = defineTool({
  name: "workspace_file_write",
  title: "Write a file",
  description: "Create or replace a text file in the workspace, no shell quoting needed. For small edits to existing files prefer workspace_patch_apply.",
  profile: "workspace-core",
  annotations: destructive(true),
  input: {
    workspace_id: workspaceId,
    path: z.string().describe("File relative to /workspace"),
    text: z.string().describe("Full new content (UTF-8)"),
  },
  run: (a, rt) => rt.pyro.writeWorkspaceFile(a.workspace_id, a.path, a.text),
});
