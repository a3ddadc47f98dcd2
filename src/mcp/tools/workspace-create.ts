import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const workspaceCreate: ToolFactory = (surface) => ({
  name: "workspace_create",
  title: "Create a workspace",
  description:
    "Create and start a persistent, isolated Linux workspace (a VM whose /workspace keeps your files). " +
    "Pass seed_path to copy a host directory or .tar/.tgz into /workspace. Next: workspace_exec to run commands.",
  inputSchema: {
    environment: z.string().default("debian:12").describe("debian:12 (git, python3), debian:12-base or debian:12-build (compilers)"),
    seed_path: z.string().optional().describe("Host directory or archive to copy into /workspace"),
    name: z.string().optional().describe("Unique name, usable instead of the id"),
    labels: z.record(z.string(), z.string()).optional(),
    ...(surface.machineShape
      ? {
          // Bounds are checked once, by createWorkspace (the same check the CLI and SDK get).
          vcpu_count: z.number().int().optional(),
          mem_mib: z.number().int().optional(),
          disk_gib: z.number().int().optional().describe("Size of the /workspace disk in GiB (default 4)"),
          ttl_seconds: z.number().positive().optional().describe("Delete after this long without activity"),
        }
      : {}),
    ...(surface.secretsAndNetwork
      ? {
          secrets: z.record(z.string(), z.string()).optional().describe("Secret values by name; kept in the guest's tmpfs, redacted from all output"),
          network_policy: z.enum(["off", "egress", "egress+published-ports"]).default("off").describe("off: no network; egress: outbound HTTP(S) via pyro's proxy"),
          allow_hosts: z.array(z.string()).optional().describe("Egress allowlist: host names (*.example.com) or CIDRs"),
        }
      : {}),
  },
  run: (a, rt) =>
    rt.pyro.createWorkspace(String(a.environment), {
      ...(a.seed_path ? { seedPath: String(a.seed_path) } : {}),
      ...(a.name ? { name: String(a.name) } : {}),
      ...(a.labels ? { labels: a.labels as Record<string, string> } : {}),
      ...(a.vcpu_count ? { vcpuCount: Number(a.vcpu_count) } : {}),
      ...(a.mem_mib ? { memMib: Number(a.mem_mib) } : {}),
      ...(a.disk_gib ? { diskGib: Number(a.disk_gib) } : {}),
      ...(a.ttl_seconds ? { ttlSeconds: Number(a.ttl_seconds) } : {}),
      ...(a.secrets ? { secrets: a.secrets as Record<string, string> } : {}),
      ...(a.network_policy ? { networkPolicy: String(a.network_policy) } : {}),
      ...(a.allow_hosts ? { allowHosts: a.allow_hosts as string[] } : {}),
    }),
});
