import { isIP } from "node:net";

/**
 * Who a guest may reach. Enforced outside the guest by the egress proxy. Private, loopback and
 * link-local destinations are refused unless explicitly allowed, so a guest never reaches host
 * services or another workspace's published ports by accident.
 */
export interface EgressPolicy {
  /** Host names ("example.com", "*.example.com") and CIDRs ("203.0.113.0/24"); empty = any public host. */
  allow: string[];
}

function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, part) => (acc << 8) + Number(part), 0) >>> 0;
}

function inCidr(ip: string, cidr: string): boolean {
  const [base, bitsText] = cidr.split("/");
  if (!base || isIP(base) !== isIP(ip)) return false;
  if (isIP(ip) === 4) {
    const bits = Number(bitsText ?? 32);
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return (ipv4ToInt(ip) & mask) === (ipv4ToInt(base) & mask);
  }
  // IPv6: compare expanded hex groups up to the prefix length (whole groups are enough here).
  const expand = (a: string) => {
    const [head, tail = ""] = a.split("::");
    const h = head ? head.split(":") : [];
    const t = tail ? tail.split(":") : [];
    return [...h, ...Array(8 - h.length - t.length).fill("0"), ...t].map((g) => g.padStart(4, "0")).join("");
  };
  const bits = Number(bitsText ?? 128);
  const nibbles = Math.floor(bits / 4);
  return expand(ip).slice(0, nibbles) === expand(base).slice(0, nibbles);
}

const NON_PUBLIC = [
  "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
  "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
  "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
];

export function isPublicAddress(ip: string): boolean {
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  const addr = v4mapped ?? ip;
  return !NON_PUBLIC.some((cidr) => inCidr(addr, cidr));
}

function hostMatches(host: string, pattern: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  const p = pattern.toLowerCase();
  if (p.startsWith("*.")) return h.endsWith(p.slice(1)) && h !== p.slice(2);
  return h === p;
}

/** Validates allowlist entries up front, so a typo is an error at create, not a silent deny. */
export function validateAllowEntry(entry: string): string {
  const trimmed = entry.trim();
  const [base, bits] = trimmed.split("/");
  if (bits !== undefined) {
    const max = isIP(base ?? "") === 4 ? 32 : isIP(base ?? "") === 6 ? 128 : -1;
    if (max < 0 || !/^\d+$/.test(bits) || Number(bits) > max) throw new Error(`'${entry}' is not a valid CIDR`);
    return trimmed;
  }
  if (isIP(trimmed)) return trimmed;
  if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(trimmed)) throw new Error(`'${entry}' is not a host name, IP or CIDR`);
  return trimmed.toLowerCase();
}

export type EgressDecision = { allowed: true; address: string } | { allowed: false; reason: string };

/** Decides one connection: the requested host name and the addresses it resolved to. */
export function decideEgress(policy: EgressPolicy, host: string, addresses: string[]): EgressDecision {
  if (addresses.length === 0) return { allowed: false, reason: `${host} does not resolve` };
  const explicitHost = policy.allow.some((p) => !p.includes("/") && !isIP(p) && hostMatches(host, p));
  for (const address of addresses) {
    // Only an explicit IP/CIDR entry opens a non-public address: a listed *name* that resolves to
    // 127.0.0.1 or 10.x (DNS rebinding, a poisoned record) must not reach host or private services.
    const explicitIp = policy.allow.some((p) => (p.includes("/") ? inCidr(address, p) : p === address));
    if (explicitIp) return { allowed: true, address };
    if (!isPublicAddress(address)) continue;
    if (policy.allow.length === 0 || explicitHost) return { allowed: true, address };
  }
  return {
    allowed: false,
    reason:
      policy.allow.length > 0
        ? `${host} is not in this workspace's egress allowlist (${policy.allow.join(", ")})`
        : `${host} resolves to a non-public address (${addresses.join(", ")}); allow it explicitly to reach it`,
  };
}
