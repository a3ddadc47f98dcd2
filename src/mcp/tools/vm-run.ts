import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const vmRun: ToolFactory = () => ({
  name: "vm_run",
  title: "Run one command in a throwaway VM",
  description:
    "Run one shell command in a fresh, isolated Linux microVM that is destroyed afterwards. Use for one-off checks " +
    "(versions, quick scripts). For repeated work on files, create a workspace with workspace_create instead.",
  inputSchema: {
    command: z.string().min(1).describe("Shell command, run with /bin/sh -c"),
    environment: z.string().default("debian:12").describe("debian:12, debian:12-base or debian:12-build"),
    // Machine-shape bounds are checked once, by the one-shot run itself (the same check `pyro run` gets).
    vcpu_count: z.number().int().optional().describe("Virtual CPUs (default 1)"),
    mem_mib: z.number().int().optional().describe("Guest memory in MiB (default 1024)"),
    timeout_seconds: z.number().positive().max(3600).default(30),
    ttl_seconds: z
      .number()
      .positive()
      .optional()
      .describe("Lifetime cap: the VM is destroyed when its command ends, so this caps the command's run time too"),
    network: z.boolean().default(false).describe("Allow outbound network access"),
    allow_host_compat: z
      .boolean()
      .default(false)
      .describe("Run on the host (no isolation) if no guest can boot here; off by default"),
  },
  run: (a, rt) => {
    const timeout = Number(a.timeout_seconds);
    // A one-shot VM lives exactly as long as its command: a TTL below the timeout ends the command sooner.
    const ttl = a.ttl_seconds === undefined ? undefined : Number(a.ttl_seconds);
    return rt.pyro.run(String(a.environment), ["sh", "-c", String(a.command)], {
      timeoutSeconds: ttl === undefined ? timeout : Math.min(timeout, ttl),
      network: Boolean(a.network),
      ...(a.vcpu_count !== undefined ? { vcpuCount: Number(a.vcpu_count) } : {}),
      ...(a.mem_mib !== undefined ? { memMib: Number(a.mem_mib) } : {}),
      ...(a.allow_host_compat ? { allowHostCompat: true } : {}),
    });
  },
});
