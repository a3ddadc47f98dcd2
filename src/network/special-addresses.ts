/**
 * Which addresses are public: the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890
 * and its updates), plus the address-architecture facts they leave out (IPv4 multicast; IPv6 outside
 * 2000::/3 is not global unicast). Decided on bytes, most specific entry first, and IPv6 forms that
 * carry an IPv4 destination (NAT64, 6to4, Teredo) are public only if every IPv4 they carry is.
 */
import { canonicalAddress, cidrContains, formatAddress, parseCidr, type Cidr, type IpBytes } from "./ip-address.js";

interface SpecialRange {
  cidr: Cidr;
  name: string;
  /** The registry's "Globally Reachable" (N/A entries that embed IPv4 are true, decided by `embeds`). */
  global: boolean;
  /** The IPv4 addresses a packet to this IPv6 address is delivered to. */
  embeds?: (bytes: IpBytes) => IpBytes[];
}

function range(cidr: string, name: string, global: boolean, embeds?: SpecialRange["embeds"]): SpecialRange {
  const parsed = parseCidr(cidr);
  if (!parsed) throw new Error(`bad registry entry ${cidr}`);
  return { cidr: parsed, name, global, ...(embeds ? { embeds } : {}) };
}

const v4At = (offset: number) => (b: IpBytes) => [b.slice(offset, offset + 4)];

const IPV4_RANGES: SpecialRange[] = [
  range("0.0.0.0/8", "this network", false),
  range("0.0.0.0/32", "this host", false),
  range("10.0.0.0/8", "private-use", false),
  range("100.64.0.0/10", "shared address space (CGN)", false),
  range("127.0.0.0/8", "loopback", false),
  range("169.254.0.0/16", "link-local", false),
  range("172.16.0.0/12", "private-use", false),
  range("192.0.0.0/24", "IETF protocol assignments", false),
  range("192.0.0.0/29", "IPv4 service continuity prefix", false),
  range("192.0.0.8/32", "IPv4 dummy address", false),
  range("192.0.0.9/32", "PCP anycast", true),
  range("192.0.0.10/32", "TURN anycast", true),
  range("192.0.0.170/32", "NAT64/DNS64 discovery", false),
  range("192.0.0.171/32", "NAT64/DNS64 discovery", false),
  range("192.0.2.0/24", "documentation (TEST-NET-1)", false),
  range("192.31.196.0/24", "AS112-v4", true),
  range("192.52.193.0/24", "AMT", true),
  range("192.88.99.0/24", "deprecated 6to4 relay anycast", false),
  range("192.168.0.0/16", "private-use", false),
  range("192.175.48.0/24", "direct delegation AS112 service", true),
  range("198.18.0.0/15", "benchmarking", false),
  range("198.51.100.0/24", "documentation (TEST-NET-2)", false),
  range("203.0.113.0/24", "documentation (TEST-NET-3)", false),
  range("224.0.0.0/4", "multicast", false),
  range("240.0.0.0/4", "reserved", false),
  range("255.255.255.255/32", "limited broadcast", false),
];

const IPV6_RANGES: SpecialRange[] = [
  // Address architecture (RFC 4291): only 2000::/3 is allocated global unicast. This also covers
  // multicast (ff00::/8), site-local (fec0::/10), IPv4-compatible (::/96) and IPv4-translated
  // (::ffff:0:0:0/96) addresses, which the special-purpose registry does not list.
  range("::/0", "not global unicast", false),
  range("2000::/3", "global unicast", true),
  range("::1/128", "loopback", false),
  range("::/128", "unspecified", false),
  // ::ffff:0:0/96 (IPv4-mapped) never gets here: addressScope decides it as the IPv4 it maps.
  range("64:ff9b::/96", "NAT64 well-known prefix", true, v4At(12)),
  range("64:ff9b:1::/48", "local-use NAT64", false),
  range("100::/64", "discard-only", false),
  range("100:0:0:1::/64", "dummy IPv6 prefix", false),
  range("2001::/23", "IETF protocol assignments", false),
  // Teredo: the server's IPv4 in bytes 4-7, the client's (inverted) in bytes 12-15.
  range("2001::/32", "Teredo", true, (b) => [b.slice(4, 8), b.slice(12, 16).map((x) => x ^ 0xff)]),
  range("2001:1::1/128", "PCP anycast", true),
  range("2001:1::2/128", "TURN anycast", true),
  range("2001:1::3/128", "DNS-SD SRP anycast", true),
  range("2001:2::/48", "benchmarking", false),
  range("2001:3::/32", "AMT", true),
  range("2001:4:112::/48", "AS112-v6", true),
  range("2001:10::/28", "deprecated ORCHID", false),
  range("2001:20::/28", "ORCHIDv2", true),
  range("2001:30::/28", "drone remote ID entity tags", true),
  range("2001:db8::/32", "documentation", false),
  range("2002::/16", "6to4", true, v4At(2)),
  range("2620:4f:8000::/48", "direct delegation AS112 service", true),
  range("3fff::/20", "documentation", false),
  range("5f00::/16", "SRv6 SIDs", false),
  range("fc00::/7", "unique-local", false),
  range("fe80::/10", "link-local", false),
];

/** The most specific registry entry holding the address (longest prefix wins, as RFC 6890 says). */
function mostSpecific(address: IpBytes): SpecialRange | undefined {
  let best: SpecialRange | undefined;
  for (const r of address.length === 4 ? IPV4_RANGES : IPV6_RANGES) {
    if (cidrContains(r.cidr, address) && (!best || r.cidr.bits > best.cidr.bits)) best = r;
  }
  return best;
}

export type AddressScope = { public: true } | { public: false; why: string };

/** Whether a connection to these bytes leaves for the public internet, and if not, why. */
export function addressScope(bytes: IpBytes): AddressScope {
  const address = canonicalAddress(bytes);
  const entry = mostSpecific(address);
  if (!entry) return { public: true };
  if (!entry.global) return { public: false, why: entry.name };
  for (const inner of entry.embeds?.(address) ?? []) {
    const scope = addressScope(inner);
    if (!scope.public) return { public: false, why: `${entry.name} to ${formatAddress(inner)} (${scope.why})` };
  }
  return { public: true };
}
