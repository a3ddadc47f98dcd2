import { z } from "zod";
import { RUN_DEFAULTS } from "../../vm-run/run-result.js";
import { commandTimeout, environment, memMib, shellCommand, vcpuCount } from "../tool-arguments.js";
import { runResultSchema } from "../tool-results.js";
import { defineTool } from "../tool-definition.js";

export const vmRun = defineTool({
  name: "vm_run",
  title: "Run one command in a throwaway VM",
  description:
    "Run one shell command in a fresh, isolated Linux microVM that is destroyed afterwards. Use for one-off checks " +
    "(versions, quick scripts). For repeated work on files, create a workspace with workspace_create instead.",
  profile: "vm-run",
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
  output: runResultSchema,
  input: {
    command: shellCommand,
    environment,
    vcpu_count: vcpuCount,
    mem_mib: memMib,
    timeout_seconds: commandTimeout(RUN_DEFAULTS.timeoutSeconds),
    ttl_seconds: z.number().positive().optional().describe("Lifetime cap: the VM is destroyed when its command ends, so this caps the command's run time too"),
    network: z.boolean().default(false).describe("Allow outbound network access"),
    allow_host_compat: z.boolean().default(false).describe("Run on the host (no isolation) if no guest can boot here; off by default"),
  },
  run: (a, rt) =>
    rt.pyro.run(a.environment, ["sh", "-c", a.command], {
      // A one-shot VM lives exactly as long as its command: a TTL below the timeout ends the command sooner.
      timeoutSeconds: a.ttl_seconds === undefined ? a.timeout_seconds : Math.min(a.timeout_seconds, a.ttl_seconds),
      network: a.network,
      ...(a.vcpu_count !== undefined ? { vcpuCount: a.vcpu_count } : {}),
      ...(a.mem_mib !== undefined ? { memMib: a.mem_mib } : {}),
      ...(a.allow_host_compat ? { allowHostCompat: true } : {}),
    }),
});
