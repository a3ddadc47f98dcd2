import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

const ids = { workspace_id: z.string().describe("Workspace id or name"), shell_id: z.string().describe("Shell id from shell_open") };

export const shellOpen: ToolFactory = () => ({
  name: "shell_open",
  title: "Open an interactive shell",
  description: "Open a persistent interactive bash (a real terminal) in the workspace, for REPLs and interactive programs. Next: shell_write, then shell_read.",
  inputSchema: {
    workspace_id: ids.workspace_id,
    cwd: z.string().optional().describe("Directory relative to /workspace"),
    secret_env: z.array(z.string()).optional().describe("Secrets to expose as env vars: NAME or NAME=ENV_VAR"),
  },
  run: (a, rt) => rt.pyro.openShell(String(a.workspace_id), { ...(a.cwd ? { cwd: String(a.cwd) } : {}), ...(a.secret_env ? { secretEnv: a.secret_env as string[] } : {}) }),
});

export const shellRead: ToolFactory = () => ({
  name: "shell_read",
  title: "Read shell output",
  description: "Read a shell's output from a cursor (pass back next_cursor to continue). plain=true renders it as plain text; wait_for_idle_ms waits for the program to go quiet first.",
  inputSchema: {
    ...ids,
    cursor: z.number().int().min(0).default(0),
    max_chars: z.number().int().positive().default(65_536),
    plain: z.boolean().default(true),
    wait_for_idle_ms: z.number().int().positive().max(30_000).optional(),
  },
  run: (a, rt) =>
    rt.pyro.readShell(String(a.workspace_id), String(a.shell_id), {
      cursor: Number(a.cursor),
      maxChars: Number(a.max_chars),
      plain: Boolean(a.plain),
      ...(a.wait_for_idle_ms ? { waitForIdleMs: Number(a.wait_for_idle_ms) } : {}),
    }),
});

export const shellWrite: ToolFactory = () => ({
  name: "shell_write",
  title: "Type into a shell",
  description: "Type input into a shell (Enter is pressed unless newline=false). Next: shell_read with wait_for_idle_ms to see the result.",
  inputSchema: { ...ids, input: z.string(), newline: z.boolean().default(true) },
  run: (a, rt) => rt.pyro.writeShell(String(a.workspace_id), String(a.shell_id), String(a.input), { newline: Boolean(a.newline) }),
});

export const shellSignal: ToolFactory = () => ({
  name: "shell_signal",
  title: "Signal a shell's foreground job",
  description: "Send a signal to the shell's foreground program: INT is Ctrl-C; TERM, KILL and HUP also work.",
  inputSchema: { ...ids, signal: z.enum(["INT", "TERM", "KILL", "HUP"]).default("INT") },
  run: (a, rt) => rt.pyro.signalShell(String(a.workspace_id), String(a.shell_id), a.signal as "INT"),
});

export const shellClose: ToolFactory = () => ({
  name: "shell_close",
  title: "Close a shell",
  description: "Close a shell and end everything running in it.",
  inputSchema: ids,
  run: (a, rt) => rt.pyro.closeShell(String(a.workspace_id), String(a.shell_id)),
});
