import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceFileWrite: ToolFactory = () => ({
  name: "workspace_file_write",
  title: "Write a file",
  description: "Create or replace a text file in the workspace, no shell quoting needed. For small edits to existing files prefer workspace_patch_apply.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    path: z.string().describe("File relative to /workspace"),
    text: z.string().describe("Full new content (UTF-8)"),
  },
  run: (a, rt) => rt.pyro.writeWorkspaceFile(String(a.workspace_id), String(a.path), String(a.text)),
});
