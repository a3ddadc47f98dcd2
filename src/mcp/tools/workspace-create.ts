import { z } from "zod";
import { NETWORK_POLICIES, WORKSPACE_DISK_GIB } from "../../workspaces/workspace-limits.js";
import { environment, memMib, vcpuCount } from "../tool-arguments.js";
import { ADDITIVE, defineTool } from "../tool-definition.js";

export const workspaceCreate = defineTool({
  name: "workspace_create",
  title: "Create a workspace",
  description:
    "Create and start a persistent, isolated Linux workspace (a VM whose /workspace keeps your files). " +
    "seed_path copies a host directory or .tar/.tgz into /workspace; without it you get the server's project " +
    "(its Git checkout's non-ignored files), or an empty /workspace if it has none: workspace_seed says which. Next: workspace_exec.",
  profile: "workspace-core",
  annotations: ADDITIVE,
  input: {
    environment,
    seed_path: z.string().optional().describe("Host directory or archive to copy into /workspace (default: the server's project, if any)"),
    name: z.string().optional().describe("Unique name, usable instead of the id"),
    labels: z.record(z.string(), z.string()).optional(),
    vcpu_count: vcpuCount,
    mem_mib: memMib,
    disk_gib: z
      .number()
      .int()
      .min(WORKSPACE_DISK_GIB.min)
      .max(WORKSPACE_DISK_GIB.max)
      .optional()
      .describe(`Size of the /workspace disk in GiB (default ${WORKSPACE_DISK_GIB.default}); the seed must fit`),
    ttl_seconds: z.number().positive().optional().describe("Delete after this long without activity"),
    secrets: z
      .record(z.string(), z.string())
      .optional()
      .describe(
        "Secret values by name. Injected (default): the value is in the guest's tmpfs, redacted from all output. Scoped (listed in secret_hosts): the guest only sees a placeholder",
      ),
    secret_hosts: z
      .record(z.string(), z.array(z.string()))
      .optional()
      .describe(
        "Scoped secrets: NAME -> hosts. $NAME in the guest is a placeholder that the egress proxy replaces with the value only in HTTP(S) requests to these hosts; sent anywhere else it is refused. Needs network_policy egress",
      ),
    secret_memory_only: z.boolean().optional().describe("Keep scoped secrets' values in memory only (never written); they are gone when the VM stops"),
    inspect_tls: z.boolean().optional().describe("Terminate guest HTTPS at the egress proxy (workspace CA) even without scoped secrets"),
    network_policy: z.enum(NETWORK_POLICIES).default("off").describe("off: no network; egress: outbound HTTP(S) via pyro's proxy"),
    allow_hosts: z.array(z.string()).optional().describe("Egress allowlist: host names (*.example.com) or CIDRs"),
  },
  gated: {
    machineShape: ["vcpu_count", "mem_mib", "disk_gib", "ttl_seconds"],
    secretsAndNetwork: ["secrets", "secret_hosts", "secret_memory_only", "inspect_tls", "network_policy", "allow_hosts"],
  },
  run: (a, rt) =>
    rt.pyro.createWorkspace(a.environment, {
      ...(a.seed_path ? { seedPath: a.seed_path } : {}),
      ...(a.name ? { name: a.name } : {}),
      ...(a.labels ? { labels: a.labels } : {}),
      ...(a.vcpu_count !== undefined ? { vcpuCount: a.vcpu_count } : {}),
      ...(a.mem_mib !== undefined ? { memMib: a.mem_mib } : {}),
      ...(a.disk_gib !== undefined ? { diskGib: a.disk_gib } : {}),
      ...(a.ttl_seconds !== undefined ? { ttlSeconds: a.ttl_seconds } : {}),
      ...(a.secrets ? { secrets: a.secrets } : {}),
      ...(a.network_policy ? { networkPolicy: a.network_policy } : {}),
      ...(a.allow_hosts ? { allowHosts: a.allow_hosts } : {}),
      ...(a.secret_hosts ? { secretHosts: a.secret_hosts } : {}),
      ...(a.secret_memory_only ? { secretMemoryOnly: true } : {}),
      ...(a.inspect_tls ? { tlsInterception: true } : {}),
    }),
});
