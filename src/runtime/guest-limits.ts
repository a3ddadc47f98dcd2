import { PyroError } from "../errors.js";

/**
 * The bounds every face checks against, declared once: the CLI's option parsers, the MCP tools'
 * schemas and the SDK's own checks (one-shot runs and workspaces alike) all read these.
 */
export const MACHINE_SHAPE_LIMITS = {
  vcpuCount: { min: 1, max: 16 },
  /** 256 MiB is the least a workspace needs (its tmpfs, shells and services); one-shot runs share the bound. */
  memMib: { min: 256, max: 65_536 },
} as const;

/** A guest's CPUs and memory when the caller does not choose (boot templates are keyed on this too). */
export const DEFAULT_MACHINE_SHAPE = { vcpuCount: 1, memMib: 1024 } as const;

/** The longest a single command may run, in seconds (one day). */
export const COMMAND_TIMEOUT_MAX_SECONDS = 86_400;

export interface MachineShapeChoice {
  vcpuCount?: number | undefined;
  memMib?: number | undefined;
}

/** Refuses a CPU count or memory size outside MACHINE_SHAPE_LIMITS (undefined = the default). */
export function checkMachineShape(shape: MachineShapeChoice): void {
  const check = (name: string, value: number | undefined, { min, max }: { min: number; max: number }) => {
    if (value !== undefined && (!Number.isInteger(value) || value < min || value > max)) {
      throw new PyroError("INVALID_ARGUMENT", `${name} must be an integer between ${min} and ${max}, got ${value}`);
    }
  };
  check("vcpu count", shape.vcpuCount, MACHINE_SHAPE_LIMITS.vcpuCount);
  check("memory (MiB)", shape.memMib, MACHINE_SHAPE_LIMITS.memMib);
}

/** Refuses a command timeout that is not a positive number of seconds up to COMMAND_TIMEOUT_MAX_SECONDS. */
export function checkCommandTimeout(seconds: number | undefined): void {
  if (seconds !== undefined && !(seconds > 0 && seconds <= COMMAND_TIMEOUT_MAX_SECONDS)) {
    throw new PyroError("INVALID_ARGUMENT", `timeout must be between 0 and ${COMMAND_TIMEOUT_MAX_SECONDS} seconds, got ${seconds}`);
  }
}

/**
 * Host memory (MemAvailable, MiB) below which no warm VM is kept (for the next run or create): a
 * paused guest holds what it touched, and a busy host needs it more than the next one needs to be fast.
 */
export const WARM_VM_MIN_HOST_AVAILABLE_MIB = 2048;
