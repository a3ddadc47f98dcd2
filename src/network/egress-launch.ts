import { join } from "node:path";
import { packageRoot } from "../paths.js";
import { writeJsonAtomic } from "../storage/atomic-file.js";
import { EGRESS_PROXY_ADDRESS, EGRESS_PROXY_PORT } from "../runtime/qemu/qemu-args.js";
import type { VmLaunchSpec } from "../runtime/vmm-backend.js";
import { PyroError } from "../errors.js";
import { parseHostPublicCidrs, type EgressPolicy } from "./egress-policy.js";

/** Environment that points guest tools (curl, pip, npm, git, apt) at the egress proxy. */
export function proxyEnvironment(): Record<string, string> {
  const url = `http://${EGRESS_PROXY_ADDRESS}:${EGRESS_PROXY_PORT}`;
  return { http_proxy: url, https_proxy: url, HTTP_PROXY: url, HTTPS_PROXY: url, no_proxy: "localhost,127.0.0.1", NO_PROXY: "localhost,127.0.0.1" };
}

/** Where every egress server of this runtime dir keeps its open-connection count (the host-wide limit). */
export function egressCountDir(runtimeDir: string): string {
  return join(runtimeDir, "egress-connections");
}

/**
 * Writes the policy file and returns the VM's network: an egress server (egress-server.js) that the
 * VMM backend runs beside the VM for its whole life.
 */
export async function egressNetwork(policyPath: string, policy: EgressPolicy, runtimeDir: string, env: NodeJS.ProcessEnv = process.env): Promise<Exclude<VmLaunchSpec["network"], "none">> {
  let hostPublic: string[];
  try {
    hostPublic = parseHostPublicCidrs(env.PYRO_EGRESS_PUBLIC_CIDRS ?? "");
  } catch (error) {
    throw new PyroError("INVALID_ARGUMENT", `PYRO_EGRESS_PUBLIC_CIDRS: ${(error as Error).message}`);
  }
  await writeJsonAtomic(policyPath, { ...policy, hostPublic }, 0o600);
  const server = join(packageRoot(), "dist", "src", "network", "egress-server.js");
  // Small heaps: the server holds sockets and headers, nothing large.
  return { egressServer: [process.execPath, "--max-semi-space-size=1", "--max-old-space-size=64", server, `--policy=${policyPath}`, `--count-dir=${egressCountDir(runtimeDir)}`] };
}
