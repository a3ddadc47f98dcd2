/**
 * What a guest's proxy request asks for: the destination of a CONNECT (authority form) or of a
 * plain-HTTP request (absolute form), and the headers that go upstream. Input is hostile: the
 * destination is parsed once, here, and everything after (policy, connect, Host header) uses the
 * parsed result, never the request's own text.
 */
import { TCP_PORT_RANGE } from "./tcp-port.js";
import { canonicalAddress, formatAddress, parseIpv4Numeric, parseIpv6, type IpBytes } from "./ip-address.js";

/** A request the proxy answers itself with `status` and a one-line reason. */
export class ProxyRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ProxyTarget {
  /** Lower-case host name, or the canonical text of an IP literal (for messages and allowlist names). */
  host: string;
  /** Set when the host is an IP literal, in any notation: then nothing is resolved. */
  address?: IpBytes;
  port: number;
}

export interface HttpTarget extends ProxyTarget {
  /** Origin-form path and query for the upstream request line. */
  path: string;
  /** The Host header that names this target (host, and port unless it is 80). */
  hostHeader: string;
}

const LABEL = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})$/;

/** A DNS name of letters, digits, `-` and `_` (one trailing dot allowed), else a refusal. */
function hostName(text: string, original: string): string {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  if (name.length === 0 || name.length > 253 || !name.split(".").every((l) => LABEL.test(l))) {
    throw new ProxyRefusal(400, `bad destination host '${original}'`);
  }
  return name.toLowerCase();
}

function port(text: string, original: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) < TCP_PORT_RANGE.min || Number(text) > TCP_PORT_RANGE.max)
    throw new ProxyRefusal(400, `bad destination port in '${original}'`);
  return Number(text);
}

/** Host text that is an IP literal in any notation, or a name. */
function hostTarget(text: string, original: string): Omit<ProxyTarget, "port"> {
  if (text.startsWith("[")) {
    const v6 = text.endsWith("]") ? parseIpv6(text.slice(1, -1)) : undefined;
    if (!v6) throw new ProxyRefusal(400, `bad IPv6 destination '${original}'`);
    const address = canonicalAddress(v6);
    return { host: formatAddress(address), address };
  }
  const v4 = parseIpv4Numeric(text);
  if (v4) return { host: formatAddress(v4), address: v4 };
  return { host: hostName(text, original) };
}

/** The destination of `CONNECT host:port` (`[v6]:port` for IPv6). */
export function parseConnectTarget(authority: string): ProxyTarget {
  if (authority.length > 300) throw new ProxyRefusal(400, "CONNECT target too long");
  const colon = authority.lastIndexOf(":");
  const close = authority.lastIndexOf("]");
  if (colon < 0 || colon < close) throw new ProxyRefusal(400, `CONNECT needs host:port, got '${authority}'`);
  const hostText = authority.slice(0, colon);
  if (!hostText.startsWith("[") && hostText.includes(":")) throw new ProxyRefusal(400, `write an IPv6 CONNECT target in brackets: '${authority}'`);
  return { ...hostTarget(hostText, authority), port: port(authority.slice(colon + 1), authority) };
}

/** The destination, path and Host header of an absolute-form request (`GET http://host/path`). */
export function parseAbsoluteTarget(target: string): HttpTarget {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw new ProxyRefusal(400, "send requests through the proxy in absolute form (set http_proxy)");
  }
  if (url.protocol === "https:") throw new ProxyRefusal(400, "https goes through the proxy with CONNECT, not as a plain request");
  if (url.protocol !== "http:") throw new ProxyRefusal(400, `unsupported scheme ${url.protocol}`);
  // WHATWG URL parsing has already turned numeric IPv4 forms (2130706433, 0x7f.1) into dotted quads.
  const host = hostTarget(url.hostname, target);
  const portNumber = url.port ? port(url.port, target) : 80;
  const hostPart = host.address?.length === 16 ? `[${host.host}]` : host.host;
  return {
    ...host,
    port: portNumber,
    path: `${url.pathname}${url.search}`,
    hostHeader: portNumber === 80 ? hostPart : `${hostPart}:${portNumber}`,
  };
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never forwarded either way. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

function forwardable(rawHeaders: string[], drop: Set<string>): string[] {
  const named = new Set(drop);
  // Headers a Connection header lists are hop-by-hop too.
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "connection") for (const token of rawHeaders[i + 1]!.split(",")) named.add(token.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (!named.has(name.toLowerCase()) && !name.toLowerCase().startsWith("proxy-")) out.push(name, rawHeaders[i + 1]!);
  }
  return out;
}

/**
 * Upstream request headers, as a raw [name, value, …] list: the guest's own Host header is
 * replaced by the one naming the checked target, so an allowed address cannot be asked for
 * another site (domain fronting past the allowlist).
 */
export function upstreamRequestHeaders(rawHeaders: string[], hostHeader: string): string[] {
  return ["Host", hostHeader, ...forwardable(rawHeaders, new Set([...HOP_BY_HOP, "host"]))];
}

/** Response headers passed back to the guest (hop-by-hop ones removed). */
export function downstreamResponseHeaders(rawHeaders: string[]): string[] {
  return forwardable(rawHeaders, HOP_BY_HOP);
}
