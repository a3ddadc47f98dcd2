import { z } from "zod";
import { FILE_READ_DEFAULT_MAX_BYTES, FILE_READ_MAX_BYTES } from "../../workspaces/workspace-limits.js";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceFileRead = defineTool({
  name: "workspace_file_read",
  title: "Read a file",
  description: "Read a file from the workspace (path relative to /workspace). Binary files come back base64-encoded.",
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: {
    workspace_id: workspaceId,
    path: z.string().describe("File relative to /workspace"),
    max_bytes: z.number().int().positive().max(FILE_READ_MAX_BYTES).default(FILE_READ_DEFAULT_MAX_BYTES),
  },
  run: (a, rt) => rt.pyro.readWorkspaceFile(a.workspace_id, a.path, { maxBytes: a.max_bytes }),
});
