import { z } from "zod";
import { DIFF_PAGE_LIMITS } from "../../workspaces/workspace-limits.js";
import { workspaceId } from "../tool-arguments.js";
import { defineTool, READ_ONLY } from "../tool-definition.js";

export const workspaceDiff = defineTool({
  name: "workspace_diff",
  title: "Diff against the baseline",
  description:
    "Unified diff of /workspace against its state at creation (added, deleted and binary files included). Use it to review your changes. " +
    `Results are paged so one stays small enough to read: at most ${DIFF_PAGE_LIMITS.patchFiles} files and about ${DIFF_PAGE_LIMITS.patchBytes / 1024} KiB of patch per call; ` +
    `pass next_offset as offset for the rest. summary=true lists changed paths and counts only (up to ${DIFF_PAGE_LIMITS.summaryFiles} per page).`,
  profile: "workspace-core",
  annotations: READ_ONLY,
  input: {
    workspace_id: workspaceId,
    summary: z.boolean().optional().describe("Changed paths and counts only, no contents"),
    offset: z.number().int().min(0).optional().describe("First changed file to show: a previous result's next_offset"),
    limit: z
      .number()
      .int()
      .min(1)
      .max(DIFF_PAGE_LIMITS.summaryFiles)
      .optional()
      .describe(`Changed files per page (patch: up to ${DIFF_PAGE_LIMITS.patchFiles}, summary: up to ${DIFF_PAGE_LIMITS.summaryFiles})`),
  },
  run: (a, rt) =>
    rt.pyro.diffWorkspace(a.workspace_id, {
      ...(a.summary ? { summary: true } : {}),
      ...(a.offset !== undefined ? { offset: a.offset } : {}),
      ...(a.limit !== undefined ? { limit: a.limit } : {}),
    }),
});
