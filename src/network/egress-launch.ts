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

/** The files the proxy of a workspace with scoped secrets or TLS inspection reads and writes. */
export interface EgressInterception {
  /** Scoped secrets (names, placeholders, values, hosts): 0600, read by the proxy only. */
  secretsPath: string;
  /** Per-secret counts of hosts sent to and requests refused. */
  auditPath: string;
  caCertPath: string;
  caKeyPath: string;
  /** Values of memory-only secrets (name → value): handed to the proxy through its stdin, never written. */
  memoryValues?: Record<string, string>;
  /** The workspace opted in to values in cleartext http:// requests too (else TLS requests only). */
  secretsOverHttp?: boolean;
}

/**
 * Test-only settings, read from the environment of the pyro process that starts the VM (never from
 * a tool argument or anything the guest controls): PYRO_TEST_EGRESS_RESOLVE ("name=IP,…") makes
 * the proxy resolve those names to those addresses (the egress policy still applies), and
 * PYRO_TEST_EGRESS_UPSTREAM_CA (a PEM file) is trusted for upstream TLS besides the host's store.
 */
function testOnlyArguments(env: NodeJS.ProcessEnv): string[] {
  const args: string[] = [];
  if (env.PYRO_TEST_EGRESS_RESOLVE) args.push(`--test-resolve=${env.PYRO_TEST_EGRESS_RESOLVE}`);
  if (env.PYRO_TEST_EGRESS_UPSTREAM_CA) args.push(`--test-upstream-ca=${env.PYRO_TEST_EGRESS_UPSTREAM_CA}`);
  return args;
}

/**
 * Writes the policy file and returns the VM's network: an egress server (egress-server.js) that the
 * VMM backend runs beside the VM for its whole life.
 */
export async function egressNetwork(
  policyPath: string,
  policy: EgressPolicy,
  runtimeDir: string,
  env: NodeJS.ProcessEnv = process.env,
  interception?: EgressInterception,
): Promise<Exclude<VmLaunchSpec["network"], "none">> {
  let hostPublic: string[];
  try {
    hostPublic = parseHostPublicCidrs(env.PYRO_EGRESS_PUBLIC_CIDRS ?? "");
  } catch (error) {
    throw new PyroError("INVALID_ARGUMENT", `PYRO_EGRESS_PUBLIC_CIDRS: ${(error as Error).message}`);
  }
  await writeJsonAtomic(policyPath, { ...policy, hostPublic }, 0o600);
  const server = join(packageRoot(), "dist", "src", "network", "egress-server.js");
  const intercepting = interception
    ? [
        `--secrets=${interception.secretsPath}`,
        `--audit=${interception.auditPath}`,
        `--tls-ca=${interception.caCertPath}`,
        `--tls-ca-key=${interception.caKeyPath}`,
      ]
    : [];
  const memoryValues = interception?.memoryValues && Object.keys(interception.memoryValues).length ? interception.memoryValues : undefined;
  if (memoryValues) intercepting.push("--secret-values=stdin");
  if (interception?.secretsOverHttp) intercepting.push("--secrets-over-http");
  // Small heaps: the server holds sockets and headers, nothing large (bodies it substitutes whole are ≤ 1 MiB).
  return {
    egressServer: [
      process.execPath,
      "--max-semi-space-size=1",
      "--max-old-space-size=64",
      server,
      `--policy=${policyPath}`,
      `--count-dir=${egressCountDir(runtimeDir)}`,
      ...intercepting,
      ...testOnlyArguments(env),
    ],
    ...(memoryValues ? { egressInput: Buffer.from(JSON.stringify(memoryValues)) } : {}),
  };
}
