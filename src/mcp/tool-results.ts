import { z } from "zod";
import type { RunResult } from "../vm-run/run-result.js";
import type { WorkspaceExecResult } from "../workspaces/workspace-exec.js";

/**
 * Output schemas for the tools whose results clients most often read field by field. Each shape
 * must describe exactly the domain's result type: the assertions below fail the build when they
 * drift. Served loose (extra fields allowed) so a field added later never fails a client's check.
 */

const commandOutcome = {
  exit_code: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
  duration_ms: z.number(),
  timed_out: z.boolean(),
  stdout_truncated: z.boolean(),
  stderr_truncated: z.boolean(),
};

const runResultShape = {
  environment: z.string(),
  command: z.array(z.string()),
  ...commandOutcome,
  boot_ms: z.number(),
  total_ms: z.number(),
  execution_mode: z.enum(["guest", "host_compat"]),
  backend: z.string(),
  accel: z.enum(["kvm", "tcg", "none"]),
  vcpu_count: z.number().int(),
  mem_mib: z.number().int(),
  network: z.boolean(),
  boot_attempts: z.number().int(),
  warning: z.string().optional(),
};

const workspaceExecResultShape = {
  workspace_id: z.string(),
  sequence: z.number().int(),
  command: z.union([z.array(z.string()), z.string()]),
  cwd: z.string(),
  ...commandOutcome,
  execution_mode: z.literal("guest"),
};

export const runResultSchema = z.looseObject(runResultShape);
export const workspaceExecResultSchema = z.looseObject(workspaceExecResultShape);

type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const schemasMatchDomain: [
  Same<z.output<z.ZodObject<typeof runResultShape>>, RunResult>,
  Same<z.output<z.ZodObject<typeof workspaceExecResultShape>>, WorkspaceExecResult>,
] = [true, true];
void schemasMatchDomain;
