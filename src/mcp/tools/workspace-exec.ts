import { z } from "zod";
import { WORKSPACE_EXEC_DEFAULTS } from "../../workspaces/workspace-limits.js";
import { commandTimeout, secretEnv, shellCommand, workspaceId } from "../tool-arguments.js";
import { workspaceExecResultSchema } from "../tool-results.js";
import { defineTool, destructive } from "../tool-definition.js";

export const workspaceExec = defineTool({
  name: "workspace_exec",
  title: "Run a command in a workspace",
  description:
    "Run a shell command inside the workspace (cwd /workspace by default); files persist between calls and every " +
    "command is logged. Returns exit_code, stdout and stderr. To edit files prefer workspace_file_write or workspace_patch_apply.",
  profile: "workspace-core",
  annotations: destructive(false),
  output: workspaceExecResultSchema,
  input: {
    workspace_id: workspaceId,
    command: shellCommand,
    cwd: z.string().optional().describe("Directory relative to /workspace"),
    timeout_seconds: commandTimeout(WORKSPACE_EXEC_DEFAULTS.timeoutSeconds),
    secret_env: secretEnv,
  },
  gated: { secretsAndNetwork: ["secret_env"] },
  run: async (a, rt) => {
    const started = Date.now();
    // Long commands: tell clients that asked for progress that we are still working.
    const timer = setInterval(() => void rt.progress((Date.now() - started) / 1000, `running for ${Math.round((Date.now() - started) / 1000)} s`), 2_000);
    try {
      return await rt.pyro.execWorkspace(a.workspace_id, a.command, {
        timeoutSeconds: a.timeout_seconds,
        ...(a.cwd ? { cwd: a.cwd } : {}),
        ...(a.secret_env ? { secretEnv: a.secret_env } : {}),
      });
    } finally {
      clearInterval(timer);
    }
  },
});
