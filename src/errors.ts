/** Every failure pyro reports is a PyroError with a stable code; CLI, SDK and MCP print `message` as is. */
export type PyroErrorCode =
  | "ENVIRONMENT_UNKNOWN"
  | "ENVIRONMENT_NOT_INSTALLED"
  | "ENVIRONMENT_CORRUPT"
  | "ENVIRONMENT_BUILD_FAILED"
  | "KERNEL_UNAVAILABLE"
  | "AGENT_UNAVAILABLE"
  | "HOST_TOOL_MISSING"
  | "HOST_COMMAND_FAILED"
  | "GUEST_BOOT_FAILED"
  | "VM_DIED"
  | "GUEST_PROTOCOL"
  | "GUEST_PROTOCOL_ERROR"
  | "GUEST_OPERATION_FAILED"
  | "EXEC_TIMEOUT"
  | "INVALID_ARGUMENT"
  | "CANCELLED"
  | "WORKSPACE_NOT_FOUND"
  | "WORKSPACE_BUSY"
  | "WORKSPACE_STOPPED"
  | "WORKSPACE_RUNNING"
  | "SNAPSHOT_NOT_FOUND"
  | "PATH_OUTSIDE_WORKSPACE"
  | "UNSAFE_ARCHIVE"
  | "PATCH_FAILED"
  | "SERVICE_NOT_READY"
  | "SERVICE_EXITED"
  | "REGISTRY_UNREACHABLE"
  | "REGISTRY_UNAUTHORIZED"
  | "REGISTRY_NOT_FOUND"
  | "REGISTRY_ERROR"
  | "DIGEST_MISMATCH"
  | "UNSAFE_DIRECTORY"
  | "DISK_IMAGE_INVALID";

export class PyroError extends Error {
  readonly code: PyroErrorCode;
  /** Extra facts for diagnostics (console tail, exit status…); never needed to understand `message`. */
  readonly details: Record<string, unknown>;

  constructor(code: PyroErrorCode, message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options);
    this.name = "PyroError";
    this.code = code;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...(Object.keys(this.details).length ? { details: this.details } : {}) };
  }
}

export function isPyroError(error: unknown, code?: PyroErrorCode): error is PyroError {
  return error instanceof PyroError && (code === undefined || error.code === code);
}

/** Wraps anything thrown into a PyroError, keeping PyroErrors as they are. */
export function asPyroError(error: unknown, fallback: PyroErrorCode, context: string): PyroError {
  if (error instanceof PyroError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new PyroError(fallback, `${context}: ${message}`, {}, { cause: error });
}
