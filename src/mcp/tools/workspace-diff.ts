import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceDiff: ToolFactory = () => ({
  name: "workspace_diff",
  title: "Diff against the baseline",
  description:
    "Unified diff of /workspace against its state at creation (added, deleted and binary files included). Use it to review your changes. " +
    "Results are paged so one stays small enough to read: at most 100 files and about 256 KiB of patch per call; pass next_offset as offset for the rest. summary=true lists changed paths and counts only (up to 1000 per page).",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    summary: z.boolean().optional().describe("Changed paths and counts only, no contents"),
    offset: z.number().int().min(0).optional().describe("First changed file to show: a previous result's next_offset"),
    limit: z.number().int().min(1).optional().describe("Changed files per page (patch: up to 100, summary: up to 1000)"),
  },
  run: (a, rt) =>
    rt.pyro.diffWorkspace(String(a.workspace_id), {
      ...(a.summary ? { summary: true } : {}),
      ...(a.offset !== undefined ? { offset: Number(a.offset) } : {}),
      ...(a.limit !== undefined ? { limit: Number(a.limit) } : {}),
    }),
});
