import { NETWORK_POLICIES, type NetworkPolicy } from "./workspace-limits.js";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import { egressNetwork, proxyEnvironment } from "../network/egress-launch.js";
import { validateAllowEntry } from "../network/egress-policy.js";
import type { VmLaunchSpec } from "../runtime/vmm-backend.js";
import type { WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import { egressSecretFiles, interceptsTls, scopedSecretEnvironment, takeMemoryOnlyValues } from "./scoped-secrets.js";

export { NETWORK_POLICIES, type NetworkPolicy };

export function checkNetworkOptions(policy: string, allowHosts: string[]): { policy: NetworkPolicy; allow: string[] } {
  if (!(NETWORK_POLICIES as readonly string[]).includes(policy)) {
    throw new PyroError("INVALID_ARGUMENT", `unknown network policy '${policy}'; use ${NETWORK_POLICIES.join(", ")}`);
  }
  if (policy === "off" && allowHosts.length)
    throw new PyroError("INVALID_ARGUMENT", "an egress allowlist needs --network-policy egress (or egress+published-ports)");
  const allow = allowHosts.map((entry) => {
    try {
      return validateAllowEntry(entry);
    } catch (error) {
      throw new PyroError("INVALID_ARGUMENT", `invalid --allow-host: ${(error as Error).message}`);
    }
  });
  return { policy: policy as NetworkPolicy, allow };
}

/** Environment every command in the workspace gets (proxy settings when it has egress). */
export function networkEnvironment(record: WorkspaceRecord): Record<string, string> {
  return record.network_policy === "off" ? {} : { ...proxyEnvironment(), ...scopedSecretEnvironment(record) };
}

/** The VM's network for this workspace's policy. */
export async function launchNetwork(ctx: WorkspaceContext, record: WorkspaceRecord): Promise<VmLaunchSpec["network"]> {
  if (record.network_policy === "off") return "none";
  const memoryValues = takeMemoryOnlyValues(record.id);
  const interception = interceptsTls(record)
    ? {
        ...egressSecretFiles(ctx.store.dir(record.id)),
        ...(memoryValues ? { memoryValues } : {}),
        ...(record.secrets_over_http ? { secretsOverHttp: true } : {}),
      }
    : undefined;
  return egressNetwork(join(ctx.store.dir(record.id), "egress-policy.json"), { allow: record.allow_hosts }, ctx.paths.runtimeDir, process.env, interception);
}

export function requirePublishing(record: WorkspaceRecord): void {
  if (record.network_policy !== "egress+published-ports") {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `workspace ${record.id} has network policy '${record.network_policy}'; publishing ports needs 'egress+published-ports' (set at create)`,
    );
  }
}
