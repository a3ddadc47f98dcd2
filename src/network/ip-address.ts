/**
 * IP addresses as bytes. Every egress decision is made on the 4 or 16 bytes an address denotes,
 * never on its text: the same host has many spellings (`::ffff:7f00:1`, `::FFFF:127.0.0.1`,
 * `2130706433`, `0177.0.0.1`, `127.1`), and a check on one spelling is bypassed by another.
 */

/** 4 bytes (IPv4) or 16 bytes (IPv6), network order. */
export type IpBytes = Uint8Array;

/** Parts getaddrinfo/inet_aton and WHATWG URL accept: decimal, 0-prefixed octal, 0x-prefixed hex. */
function parseIpv4Number(part: string): number | undefined {
  if (/^0[xX][0-9a-fA-F]*$/.test(part)) return part.length === 2 ? 0 : parseInt(part.slice(2), 16);
  if (/^0[0-7]+$/.test(part)) return parseInt(part.slice(1), 8);
  if (/^(0|[1-9][0-9]*)$/.test(part)) return Number(part);
  return undefined;
}

/**
 * IPv4 in every form a resolver or URL parser turns into an address: 1 to 4 parts, each decimal,
 * octal or hex, the last part filling the remaining bytes (`127.1`, `2130706433`, `0x7f.0.0.1`),
 * with one optional trailing dot as WHATWG URL allows.
 */
export function parseIpv4Numeric(text: string): IpBytes | undefined {
  const parts = text.endsWith(".") ? text.slice(0, -1).split(".") : text.split(".");
  if (parts.length < 1 || parts.length > 4 || parts.some((p) => p.length === 0 || p.length > 40)) return undefined;
  const values = parts.map(parseIpv4Number);
  if (values.some((v) => v === undefined || !Number.isSafeInteger(v))) return undefined;
  const nums = values as number[];
  const leading = nums.slice(0, -1);
  const last = nums[nums.length - 1]!;
  if (leading.some((v) => v > 255) || last >= 256 ** (5 - nums.length)) return undefined;
  const bytes = new Uint8Array(4);
  bytes.set(leading);
  for (let i = 3, rest = last; i >= leading.length; i--, rest = Math.floor(rest / 256)) bytes[i] = rest % 256;
  return bytes;
}

/** Strict dotted-quad IPv4 (four decimal parts 0-255), the form inside IPv6 text and allowlists. */
export function parseIpv4Dotted(text: string): IpBytes | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^[0-9]{1,3}$/.test(p) || Number(p) > 255)) return undefined;
  return Uint8Array.from(parts.map(Number));
}

/**
 * IPv6 text (RFC 4291 §2.2): 1-4 hex digits per group in any case, one `::`, an optional trailing
 * dotted IPv4. Zone ids (`%eth0`) are refused: a destination with a scope is never public.
 */
export function parseIpv6(text: string): IpBytes | undefined {
  if (text.length > 64 || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (half: string): number[] | undefined => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      if (piece.includes(".")) {
        // An embedded IPv4 may only end the address.
        if (i !== pieces.length - 1) return undefined;
        const v4 = parseIpv4Dotted(piece);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groupsOf(halves[0]!);
  const tail = halves.length === 2 ? groupsOf(halves[1]!) : [];
  if (!head || !tail) return undefined;
  // A dotted IPv4 in the head is only valid when nothing follows it.
  if (halves.length === 2 && halves[0]!.includes(".")) return undefined;
  const given = head.length + tail.length;
  if (halves.length === 1 ? given !== 8 : given > 7) return undefined;
  const groups = [...head, ...Array<number>(8 - given).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** Any IP literal a destination host may be written as: bracketed or bare IPv6, or numeric IPv4. */
export function parseHostAddress(text: string): IpBytes | undefined {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return bare.includes(":") ? parseIpv6(bare) : parseIpv4Numeric(bare);
}

/** Standard IP text only (dotted-quad IPv4 or IPv6), for allowlist entries a person writes. */
export function parseStandardAddress(text: string): IpBytes | undefined {
  return text.includes(":") ? parseIpv6(text) : parseIpv4Dotted(text);
}

const MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/**
 * The address a connection really goes to. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is an
 * IPv4 destination to the kernel, so it is decided, matched and connected to as that IPv4.
 */
export function canonicalAddress(bytes: IpBytes): IpBytes {
  if (bytes.length === 16 && MAPPED_PREFIX.every((b, i) => bytes[i] === b)) return bytes.slice(12);
  return bytes;
}

/** Dotted quad, or RFC 5952 IPv6 text (lower case, the longest run of zero groups as `::`). */
export function formatAddress(bytes: IpBytes): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  let bestStart = -1;
  let bestLen = 1; // a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** A prefix of the address space: `bytes` is the base, `bits` its length. */
export interface Cidr {
  bytes: IpBytes;
  bits: number;
}

/** `a.b.c.d/n` or `ipv6/n` (or a bare address, a full-length prefix); standard notation only. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const base = parseStandardAddress(slash < 0 ? text : text.slice(0, slash));
  if (!base) return undefined;
  const max = base.length * 8;
  const bitsText = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(bitsText) || Number(bitsText) > max) return undefined;
  const cidr = { bytes: base, bits: Number(bitsText) };
  // An IPv4-mapped prefix (::ffff:a.b.c.d/n, n ≥ 96) is the IPv4 prefix it maps.
  const mapped = canonicalAddress(base);
  return mapped.length === 4 && cidr.bits >= 96 ? { bytes: mapped, bits: cidr.bits - 96 } : cidr;
}

/** Whether `address` lies in `cidr`, compared bit by bit; addresses of the other family never do. */
export function cidrContains(cidr: Cidr, address: IpBytes): boolean {
  if (cidr.bytes.length !== address.length) return false;
  const whole = cidr.bits >> 3;
  for (let i = 0; i < whole; i++) if (cidr.bytes[i] !== address[i]) return false;
  const rest = cidr.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (cidr.bytes[whole]! & mask) === (address[whole]! & mask);
}

/** The canonical text of a CIDR (`10.0.0.0/8`, `2001:db8::/32`), host bits kept as written. */
export function formatCidr(cidr: Cidr): string {
  return `${formatAddress(cidr.bytes)}/${cidr.bits}`;
}
