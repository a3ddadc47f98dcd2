import { PyroError, type PyroErrorCode } from "../errors.js";

/** What a model should do next after each kind of failure. */
const NEXT_STEP: Partial<Record<PyroErrorCode, string>> = {
  WORKSPACE_NOT_FOUND: "Call workspace_list to see the existing workspaces, or workspace_create to make one.",
  WORKSPACE_STOPPED: "Start it with workspace_start (workspace-full profile), or create a new workspace.",
  WORKSPACE_BUSY: "Another operation is using this workspace; retry in a moment.",
  PATH_OUTSIDE_WORKSPACE: "Use a path relative to /workspace.",
  PATCH_FAILED: "Read the file with workspace_file_read and regenerate the diff against its current content.",
  ENVIRONMENT_NOT_INSTALLED: "Ask the user to run 'pyro env pull' for that environment.",
  // The message names the catalogue's environments; imported ones are listed by 'pyro env list'.
  ENVIRONMENT_UNKNOWN: "Use one of the environments named above, or one the user imported (ask them to run 'pyro env list').",
  SNAPSHOT_NOT_FOUND: "Call snapshot_list to see the snapshots.",
  UNSAFE_ARCHIVE: "The archive was refused as unsafe; nothing was copied.",
  GUEST_BOOT_FAILED: "The VM could not start; ask the user to run 'pyro doctor'.",
  WORKSPACE_RUNNING: "Disk tools need a stopped workspace: call workspace_stop first, or use the workspace_file_* tools.",
  SERVICE_NOT_READY: "Check service_logs, fix the command or the readiness check, then service_start again.",
  SERVICE_EXITED: "The service crashed; read the stderr tail above, fix it, and start it again.",
};

/** Turns any failure into an MCP tool result the model can act on (never a crashed server). */
export function toolErrorResult(error: unknown): { isError: true; content: { type: "text"; text: string }[] } {
  const code = error instanceof PyroError ? error.code : "INTERNAL";
  const message = error instanceof Error ? error.message : String(error);
  const next = error instanceof PyroError ? NEXT_STEP[error.code] : undefined;
  return { isError: true, content: [{ type: "text", text: `${code}: ${message}${next ? `\nNext step: ${next}` : ""}` }] };
}
