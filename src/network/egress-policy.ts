import {
  canonicalAddress,
  cidrContains,
  formatAddress,
  formatCidr,
  parseCidr,
  parseHostAddress,
  parseIpv4Numeric,
  type Cidr,
  type IpBytes,
} from "./ip-address.js";
import { addressScope } from "./special-addresses.js";

/**
 * Who a guest may reach. Enforced outside the guest by the egress proxy. Loopback, private,
 * link-local and every other special-purpose destination is refused unless explicitly allowed by
 * IP or CIDR, so a guest never reaches host services or another workspace's published ports.
 */
export interface EgressPolicy {
  /** Host names ("example.com", "*.example.com") and CIDRs ("203.0.113.0/24"); empty = any public host. */
  allow: string[];
  /**
   * CIDRs this host's operator declared public (PYRO_EGRESS_PUBLIC_CIDRS), for networks whose
   * resolver maps internet names into special-purpose space. Treated as public, never as allowed.
   */
  hostPublic?: string[];
}

/** Whether an address (in any notation a resolver accepts) is a public internet destination. */
export function isPublicAddress(ip: string): boolean {
  const bytes = parseHostAddress(ip);
  return bytes !== undefined && addressScope(bytes).public;
}

/** Whether a host name matches an allowlist-style pattern ("example.com" exactly, "*.example.com" any subdomain). */
export function hostMatchesPattern(host: string, pattern: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  const p = pattern.toLowerCase();
  if (p.startsWith("*.")) return h.endsWith(p.slice(1)) && h !== p.slice(2);
  return h === p;
}

const HOST_NAME = /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/**
 * Validates an allowlist entry up front, so a typo is an error at create, not a silent deny.
 * Addresses and CIDRs come back in canonical text (an IPv4-mapped entry as the IPv4 it maps).
 */
export function validateAllowEntry(entry: string): string {
  const trimmed = entry.trim();
  if (trimmed.includes("/") || trimmed.includes(":")) {
    const cidr = parseCidr(trimmed);
    if (!cidr) throw new Error(`'${entry}' is not a valid ${trimmed.includes("/") ? "CIDR" : "IP address"}`);
    return trimmed.includes("/") ? formatCidr(cidr) : formatAddress(cidr.bytes);
  }
  const asIp = parseCidr(trimmed);
  if (asIp) return formatAddress(asIp.bytes);
  // `127.1` or `2130706433` would be an address to a resolver but a name to the allowlist.
  if (parseIpv4Numeric(trimmed)) throw new Error(`'${entry}' is an IP address in a shorthand form; write it as a dotted quad (a.b.c.d)`);
  if (!HOST_NAME.test(trimmed)) throw new Error(`'${entry}' is not a host name, IP or CIDR`);
  return trimmed.toLowerCase();
}

/** Ranges no host setting may declare public: the host itself. */
const NEVER_PUBLIC = ["127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128"].map((c) => parseCidr(c)!);

const overlaps = (a: Cidr, b: Cidr) => cidrContains(a, b.bytes) || cidrContains(b, a.bytes);

/** Parses PYRO_EGRESS_PUBLIC_CIDRS (comma- or space-separated CIDRs) into canonical CIDR text. */
export function parseHostPublicCidrs(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((entry) => {
      const cidr = entry.includes("/") ? parseCidr(entry) : undefined;
      if (!cidr) throw new Error(`'${entry}' is not a CIDR`);
      if (NEVER_PUBLIC.some((never) => overlaps(cidr, never))) throw new Error(`'${entry}' covers the host's own loopback or this-host addresses`);
      return formatCidr(cidr);
    });
}

interface CompiledPolicy {
  names: string[];
  prefixes: Cidr[];
}

function compile(policy: EgressPolicy): CompiledPolicy {
  const names: string[] = [];
  const prefixes: Cidr[] = [];
  for (const entry of policy.allow) {
    const cidr = parseCidr(entry);
    if (cidr) prefixes.push(cidr);
    else names.push(entry); // a name never opens a non-public address, whatever it looks like
  }
  return { names, prefixes };
}

export type EgressDecision = { allowed: true; address: string } | { allowed: false; reason: string };

/**
 * Decides one connection: the requested host (a name or an IP literal) and the addresses it
 * resolved to. An allowed decision carries the canonical IP literal to connect to: that exact
 * address, never the name again, so a second resolution cannot swap the destination.
 */
export function decideEgress(policy: EgressPolicy, host: string, addresses: string[]): EgressDecision {
  if (addresses.length === 0) return { allowed: false, reason: `${host} does not resolve` };
  const { names, prefixes } = compile(policy);
  const hostPublic = (policy.hostPublic ?? []).map((c) => parseCidr(c)).filter((c): c is Cidr => c !== undefined);
  const explicitHost = names.some((p) => hostMatchesPattern(host, p));
  const refusals: string[] = [];
  for (const text of addresses) {
    const parsed = parseHostAddress(text);
    if (!parsed) {
      refusals.push(`${text}: not an IP address`);
      continue;
    }
    const address: IpBytes = canonicalAddress(parsed);
    const literal = formatAddress(address);
    // Only an explicit IP/CIDR entry opens a non-public address: a listed *name* that resolves to
    // 127.0.0.1 or 10.x (DNS rebinding, a poisoned record) must not reach host or private services.
    if (prefixes.some((cidr) => cidrContains(cidr, address))) return { allowed: true, address: literal };
    const scope = hostPublic.some((cidr) => cidrContains(cidr, address)) ? ({ public: true } as const) : addressScope(address);
    if (!scope.public) {
      refusals.push(`${literal}: ${scope.why}`);
      continue;
    }
    if (policy.allow.length === 0 || explicitHost) return { allowed: true, address: literal };
  }
  if (policy.allow.length > 0 && !explicitHost) {
    return { allowed: false, reason: `${host} is not in this workspace's egress allowlist (${policy.allow.join(", ")})` };
  }
  return {
    allowed: false,
    reason: `${host} resolves to a non-public address (${refusals.join(", ")}); allow it explicitly by IP or CIDR to reach it`,
  };
}
