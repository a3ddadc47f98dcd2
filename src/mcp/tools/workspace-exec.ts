import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceExec: ToolFactory = (surface) => ({
  name: "workspace_exec",
  title: "Run a command in a workspace",
  description:
    "Run a shell command inside the workspace (cwd /workspace by default); files persist between calls and every " +
    "command is logged. Returns exit_code, stdout and stderr. To edit files prefer workspace_file_write or workspace_patch_apply.",
  inputSchema: {
    workspace_id: z.string().describe("Workspace id or name"),
    command: z.string().min(1).describe("Shell command, run with /bin/sh -c"),
    cwd: z.string().optional().describe("Directory relative to /workspace"),
    timeout_seconds: z.number().positive().max(86_400).default(120),
    ...(surface.secretsAndNetwork ? { secret_env: z.array(z.string()).optional().describe("Secrets to expose as env vars: NAME or NAME=ENV_VAR") } : {}),
  },
  run: async (a, rt) => {
    const started = Date.now();
    // Long commands: tell clients that asked for progress that we are still working.
    const timer = setInterval(() => void rt.progress((Date.now() - started) / 1000, `running for ${Math.round((Date.now() - started) / 1000)} s`), 2_000);
    try {
      return await rt.pyro.execWorkspace(String(a.workspace_id), String(a.command), {
        timeoutSeconds: Number(a.timeout_seconds),
        ...(a.cwd ? { cwd: String(a.cwd) } : {}),
        ...(a.secret_env ? { secretEnv: a.secret_env as string[] } : {}),
      });
    } finally {
      clearInterval(timer);
    }
  },
});
