import { z } from "zod";
import { FORK_COUNT } from "../../workspaces/workspace-limits.js";
import { workspaceId } from "../tool-arguments.js";
import { ADDITIVE, defineTool } from "../tool-definition.js";

export const workspaceFork = defineTool({
  name: "workspace_fork",
  title: "Fork a workspace",
  description:
    "Make new workspaces that continue from this one's current files, memory, processes, shells and services, while it keeps running; " +
    "writes afterwards are isolated both ways. Use it to install dependencies once, then try several fixes in parallel.",
  profile: "workspace-full",
  annotations: ADDITIVE,
  input: {
    workspace_id: workspaceId,
    count: z
      .number()
      .int()
      .min(FORK_COUNT.min)
      .max(FORK_COUNT.max)
      .optional()
      .describe(`How many copies, ${FORK_COUNT.min}-${FORK_COUNT.max} (default: one per name, at least ${FORK_COUNT.default})`),
    names: z.array(z.string()).max(FORK_COUNT.max).optional().describe("Names for the copies, in order"),
  },
  run: (a, rt) => rt.pyro.forkWorkspace(a.workspace_id, { ...(a.count !== undefined ? { count: a.count } : {}), ...(a.names ? { names: a.names } : {}) }),
});
