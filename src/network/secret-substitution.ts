import { Transform, type TransformCallback } from "node:stream";
import { hostMatchesPattern } from "./egress-policy.js";

/**
 * A scoped secret as the egress proxy sees it: the guest only ever holds `placeholder`; the proxy
 * writes `value` in its place into requests bound for one of `hosts`, and refuses any request that
 * carries the placeholder anywhere else.
 */
export interface ScopedSecretRule {
  name: string;
  placeholder: string;
  /** Absent for a memory-only secret whose value the proxy was not given (its VM was restarted). */
  value?: string;
  /** Host names ("api.example.com", "*.example.com") or IP literals the value may be sent to. */
  hosts: string[];
}

/** Placeholders look like `pyro-secret-<40 hex>`: ASCII, URL- and header-safe, never a prefix of another. */
export const PLACEHOLDER_PREFIX = "pyro-secret-";
export const PLACEHOLDER_PATTERN = /^pyro-secret-[0-9a-f]{40}$/;

/** Whether `host` (as the guest named the destination) is in a secret's scope. */
export function inScope(rule: Pick<ScopedSecretRule, "hosts">, host: string): boolean {
  return rule.hosts.some((pattern) => hostMatchesPattern(host, pattern));
}

/**
 * How a request leaves the proxy: inside TLS (an intercepted CONNECT), or as cleartext http://,
 * where a value would cross the network readable (and alterable) by anyone on the path. Values go
 * into cleartext requests only where the workspace opted in.
 */
export interface RequestTransport {
  tls: boolean;
  cleartextAllowed?: boolean;
}

/** Why a placeholder was not substituted: bound out of scope, its value gone, or a cleartext request. */
export type RefusalReason = "out-of-scope" | "value-gone" | "cleartext";

/** A request carried a secret's placeholder where its value may not go. */
export class SecretScopeRefusal extends Error {
  constructor(
    readonly secret: string,
    readonly host: string,
    readonly scope: string[],
    readonly reason: RefusalReason = "out-of-scope",
  ) {
    // Names and hosts only: a refusal never carries a value.
    super(
      reason === "value-gone"
        ? `the request carries the placeholder of memory-only secret ${secret}, whose value this proxy does not have (the workspace's VM was restarted; create the workspace again to supply it); refused`
        : reason === "cleartext"
          ? `secret ${secret} is sent only over TLS, and this is a cleartext http:// request: use https://${host} (the workspace would have to opt in to send values over plain http); refused`
          : `the request carries the placeholder of secret ${secret}, which may only be sent to ${scope.join(", ")}, not to ${host}; refused and logged as an exfiltration attempt`,
    );
  }
}

interface Replacement {
  from: Buffer;
  /** undefined: finding `from` refuses the whole request. */
  to: Buffer | undefined;
  name: string;
}

/**
 * Replaces byte patterns in one direction of one exchange. Requests: placeholder → value for
 * in-scope secrets, refusal for the rest. Responses: value → placeholder, so an upstream that
 * echoes a credential back does not hand it to the guest.
 */
export class Substitution {
  /** Names whose pattern was found (and replaced) so far. */
  readonly used = new Set<string>();
  /** The longest pattern minus one: how many trailing bytes a stream must hold back. */
  readonly window: number;

  private constructor(
    private readonly replacements: Replacement[],
    private readonly host: string,
    private readonly rules: ScopedSecretRule[],
  ) {
    this.window = Math.max(0, ...replacements.map((r) => r.from.length - 1));
  }

  /** Placeholder → value for requests to `host` sent over `transport`. */
  static forRequest(rules: ScopedSecretRule[], host: string, transport: RequestTransport): Substitution {
    const sendable = transport.tls || transport.cleartextAllowed === true;
    return new Substitution(
      rules.map((r) => ({
        from: Buffer.from(r.placeholder),
        to: sendable && inScope(r, host) && r.value !== undefined ? Buffer.from(r.value) : undefined,
        name: r.name,
      })),
      host,
      rules,
    );
  }

  /** Value → placeholder for responses (every secret's value, whatever the host). */
  static forResponse(rules: ScopedSecretRule[], host: string): Substitution {
    return new Substitution(
      rules.flatMap((r) => (r.value === undefined ? [] : [{ from: Buffer.from(r.value), to: Buffer.from(r.placeholder), name: r.name }])),
      host,
      rules,
    );
  }

  get active(): boolean {
    return this.replacements.length > 0;
  }

  /**
   * Substitutes within `data`. Unless `final`, a tail that could be the start of a pattern is not
   * emitted but returned as `held`, to be put in front of the next chunk. Throws SecretScopeRefusal.
   */
  apply(data: Buffer, final: boolean): { out: Buffer; held: Buffer } {
    const parts: Buffer[] = [];
    let pos = 0;
    const next = this.replacements.map((r) => data.indexOf(r.from, 0));
    for (;;) {
      let best = -1;
      for (let i = 0; i < next.length; i++) {
        if (next[i]! < pos && next[i] !== -1) next[i] = data.indexOf(this.replacements[i]!.from, pos);
        const at = next[i]!;
        if (at === -1) continue;
        // Earliest match wins; at the same offset, the longer pattern.
        if (best === -1 || at < next[best]! || (at === next[best]! && this.replacements[i]!.from.length > this.replacements[best]!.from.length)) best = i;
      }
      if (best === -1) break;
      const r = this.replacements[best]!;
      const at = next[best]!;
      if (!r.to) {
        const rule = this.rules.find((x) => x.name === r.name)!;
        throw new SecretScopeRefusal(
          r.name,
          this.host,
          rule.hosts,
          !inScope(rule, this.host) ? "out-of-scope" : rule.value === undefined ? "value-gone" : "cleartext",
        );
      }
      parts.push(data.subarray(pos, at), r.to);
      this.used.add(r.name);
      pos = at + r.from.length;
    }
    const safeEnd = final ? data.length : Math.max(pos, data.length - this.window);
    parts.push(data.subarray(pos, safeEnd));
    return { out: Buffer.concat(parts), held: Buffer.from(data.subarray(safeEnd)) };
  }

  /** Substitutes within a whole string (a header value, a request target); bytes as Node writes headers (latin1). */
  text(value: string, encoding: "latin1" | "utf8" = "latin1"): string {
    if (!this.active) return value;
    return this.apply(Buffer.from(value, encoding), true).out.toString(encoding);
  }

  /** A stream that substitutes as bytes pass, holding back at most `window` bytes at a time. */
  stream(): Transform {
    let held: Buffer = Buffer.alloc(0);
    const substitution = this;
    return new Transform({
      transform(chunk: Buffer, _encoding, done: TransformCallback) {
        try {
          const result = substitution.apply(held.length ? Buffer.concat([held, chunk]) : chunk, false);
          held = result.held;
          done(null, result.out.length ? result.out : undefined);
        } catch (error) {
          done(error as Error);
        }
      },
      flush(done: TransformCallback) {
        try {
          done(null, held.length ? substitution.apply(held, true).out : undefined);
        } catch (error) {
          done(error as Error);
        }
      },
    });
  }
}

/**
 * Request header values with placeholders substituted. `Authorization: Basic` carries
 * `user:password` in base64, which is how git and `curl -u` send a token: it is decoded,
 * substituted and re-encoded, so a placeholder inside it is found (and scope-checked) too.
 */
export function substituteHeaders(rawHeaders: string[], substitution: Substitution): string[] {
  if (!substitution.active) return rawHeaders;
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    let value = substitution.text(rawHeaders[i + 1]!);
    const basic = /^(basic\s+)([A-Za-z0-9+/=]+)\s*$/i.exec(value);
    if (basic && /^(proxy-)?authorization$/i.test(name)) {
      const decoded = Buffer.from(basic[2]!, "base64");
      const substituted = substitution.apply(decoded, true).out;
      if (!substituted.equals(decoded)) value = `${basic[1]}${substituted.toString("base64")}`;
    }
    out.push(name, value);
  }
  return out;
}
