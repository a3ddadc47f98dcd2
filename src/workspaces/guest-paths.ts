import { posix } from "node:path";
import { PyroError } from "../errors.js";

/** The agent's working tree in every workspace guest. */
export const WORKSPACE_ROOT = "/workspace";

/**
 * Resolves a user path (relative to /workspace, or absolute under it) to an absolute guest path,
 * refusing anything that leaves /workspace. Pure string work: nothing on the host is touched.
 */
export function workspacePath(input: string): string {
  if (input.includes("\0")) throw new PyroError("PATH_OUTSIDE_WORKSPACE", "path contains a NUL byte");
  const absolute = posix.normalize(input.startsWith("/") ? input : posix.join(WORKSPACE_ROOT, input));
  const trimmed = absolute.length > 1 ? absolute.replace(/\/+$/, "") : absolute;
  if (trimmed !== WORKSPACE_ROOT && !trimmed.startsWith(`${WORKSPACE_ROOT}/`)) {
    throw new PyroError("PATH_OUTSIDE_WORKSPACE", `path '${input}' is outside ${WORKSPACE_ROOT}; use a path relative to ${WORKSPACE_ROOT}`, { path: input });
  }
  return trimmed;
}

/** The path relative to /workspace, for display ("" for the root). */
export function relativeToWorkspace(guestPath: string): string {
  return guestPath === WORKSPACE_ROOT ? "" : guestPath.slice(WORKSPACE_ROOT.length + 1);
}
