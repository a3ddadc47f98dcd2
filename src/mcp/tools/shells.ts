import { z } from "zod";
import { SHELL_READ_DEFAULTS, SHELL_SIGNALS } from "../../workspaces/workspace-limits.js";
import { secretEnv, workspaceId } from "../tool-arguments.js";
import { ADDITIVE, defineTool, destructive, READ_ONLY } from "../tool-definition.js";

const ids = { workspace_id: workspaceId, shell_id: z.string().describe("Shell id from shell_open") };

export const shellOpen = defineTool({
  name: "shell_open",
  title: "Open an interactive shell",
  description: "Open a persistent interactive bash (a real terminal) in the workspace, for REPLs and interactive programs. Next: shell_write, then shell_read.",
  profile: "workspace-full",
  annotations: ADDITIVE,
  input: {
    workspace_id: workspaceId,
    cwd: z.string().optional().describe("Directory relative to /workspace"),
    secret_env: secretEnv,
  },
  run: (a, rt) => rt.pyro.openShell(a.workspace_id, { ...(a.cwd ? { cwd: a.cwd } : {}), ...(a.secret_env ? { secretEnv: a.secret_env } : {}) }),
});

export const shellRead = defineTool({
  name: "shell_read",
  title: "Read shell output",
  description:
    "Read a shell's output from a cursor (pass back next_cursor to continue). plain=true renders it as plain text; wait_for_idle_ms waits for the program to go quiet first.",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: {
    ...ids,
    cursor: z.number().int().min(0).default(0),
    max_chars: z.number().int().positive().max(SHELL_READ_DEFAULTS.maxCharsLimit).default(SHELL_READ_DEFAULTS.maxChars),
    plain: z.boolean().default(true),
    wait_for_idle_ms: z.number().int().positive().max(SHELL_READ_DEFAULTS.waitForIdleMaxMs).optional(),
  },
  run: (a, rt) =>
    rt.pyro.readShell(a.workspace_id, a.shell_id, {
      cursor: a.cursor,
      maxChars: a.max_chars,
      plain: a.plain,
      ...(a.wait_for_idle_ms ? { waitForIdleMs: a.wait_for_idle_ms } : {}),
    }),
});

export const shellWrite = defineTool({
  name: "shell_write",
  title: "Type into a shell",
  description: "Type input into a shell (Enter is pressed unless newline=false). Next: shell_read with wait_for_idle_ms to see the result.",
  profile: "workspace-full",
  annotations: destructive(false),
  input: { ...ids, input: z.string(), newline: z.boolean().default(true) },
  run: (a, rt) => rt.pyro.writeShell(a.workspace_id, a.shell_id, a.input, { newline: a.newline }),
});

export const shellSignal = defineTool({
  name: "shell_signal",
  title: "Signal a shell's foreground job",
  description: "Send a signal to the shell's foreground program: INT is Ctrl-C; TERM, KILL and HUP also work.",
  profile: "workspace-full",
  annotations: destructive(false),
  input: { ...ids, signal: z.enum(SHELL_SIGNALS).default("INT") },
  run: (a, rt) => rt.pyro.signalShell(a.workspace_id, a.shell_id, a.signal),
});

export const shellClose = defineTool({
  name: "shell_close",
  title: "Close a shell",
  description: "Close a shell and end everything running in it.",
  profile: "workspace-full",
  annotations: destructive(true),
  input: ids,
  run: (a, rt) => rt.pyro.closeShell(a.workspace_id, a.shell_id),
});
