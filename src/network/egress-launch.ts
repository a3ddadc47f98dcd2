import { join } from "node:path";
import { PyroError } from "../errors.js";
import { packageRoot } from "../paths.js";
import { writeJsonAtomic } from "../storage/atomic-file.js";
import { EGRESS_PROXY_ADDRESS, EGRESS_PROXY_PORT } from "../runtime/qemu/qemu-args.js";
import type { EgressPolicy } from "./egress-policy.js";

/** Environment that points guest tools (curl, pip, npm, git, apt) at the egress proxy. */
export function proxyEnvironment(): Record<string, string> {
  const url = `http://${EGRESS_PROXY_ADDRESS}:${EGRESS_PROXY_PORT}`;
  return { http_proxy: url, https_proxy: url, HTTP_PROXY: url, HTTPS_PROXY: url, no_proxy: "localhost,127.0.0.1", NO_PROXY: "localhost,127.0.0.1" };
}

/** Writes the policy file and returns the command QEMU runs for each guest connection. */
export async function egressProxyCommand(policyPath: string, policy: EgressPolicy): Promise<string[]> {
  await writeJsonAtomic(policyPath, policy, 0o600);
  const argv = [process.execPath, join(packageRoot(), "dist", "src", "network", "egress-proxy.js"), `--policy=${policyPath}`];
  // slirp splits its exec command on spaces, with no quoting.
  const spaced = argv.find((a) => a.includes(" "));
  if (spaced) throw new PyroError("INVALID_ARGUMENT", `guest networking needs paths without spaces, but '${spaced}' has one`);
  return argv;
}
