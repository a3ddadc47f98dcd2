import { z } from "zod";
import { CATALOG, DEFAULT_ENVIRONMENT } from "../environments/catalog.js";
import { TCP_PORT_RANGE } from "../network/tcp-port.js";
import { COMMAND_TIMEOUT_MAX_SECONDS, DEFAULT_MACHINE_SHAPE, MACHINE_SHAPE_LIMITS } from "../runtime/guest-limits.js";

/** Argument schemas several tools share, so each is worded and bounded once. */

export const workspaceId = z.string().describe("Workspace id or name");

export const shellCommand = z.string().min(1).describe("Shell command, run with /bin/sh -c");

export const secretEnv = z.array(z.string()).optional().describe("Secrets to expose as env vars: NAME or NAME=ENV_VAR");

/** The catalogue's environments plus any the user imported, so no list here goes stale. */
export const environment = z
  .string()
  .default(DEFAULT_ENVIRONMENT)
  .describe(`Environment: ${CATALOG.map((e) => e.name).join(", ")}, or one the user imported ('pyro env list' shows them)`);

/**
 * Machine shape. The bounds are stated from the domain's limits but checked once, by the SDK call
 * itself, so MCP, the CLI and the SDK refuse an out-of-range shape with the same message.
 */
const { vcpuCount: cpus, memMib: memory } = MACHINE_SHAPE_LIMITS;
export const vcpuCount = z.number().int().optional().describe(`Virtual CPUs, ${cpus.min}-${cpus.max} (default ${DEFAULT_MACHINE_SHAPE.vcpuCount})`);
export const memMib = z.number().int().optional().describe(`Guest memory in MiB, ${memory.min}-${memory.max} (default ${DEFAULT_MACHINE_SHAPE.memMib})`);

/** A command's time limit with the given default, bounded by the domain's maximum. */
export function commandTimeout(defaultSeconds: number) {
  return z.number().positive().max(COMMAND_TIMEOUT_MAX_SECONDS).default(defaultSeconds).describe("Kill the command after this many seconds");
}

export const tcpPort = z.number().int().min(TCP_PORT_RANGE.min).max(TCP_PORT_RANGE.max);
