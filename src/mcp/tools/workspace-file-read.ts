import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceFileRead: ToolFactory = () => ({
  name: "workspace_file_read",
  title: "Read a file",
  description: "Read a file from the workspace (path relative to /workspace). Binary files come back base64-encoded.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    path: z.string().describe("File relative to /workspace"),
    max_bytes: z.number().int().positive().default(65_536),
  },
  run: (a, rt) => rt.pyro.readWorkspaceFile(String(a.workspace_id), String(a.path), { maxBytes: Number(a.max_bytes) }),
});
