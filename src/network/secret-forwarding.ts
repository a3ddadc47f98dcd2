import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import type { SecureContext } from "node:tls";
import { pipeline, type Readable } from "node:stream";
import { downstreamResponseHeaders, upstreamRequestHeaders } from "./proxy-target.js";
import type { SecretAuditRecorder } from "./secret-audit.js";
import { inScope, SecretScopeRefusal, Substitution, substituteHeaders, type ScopedSecretRule } from "./secret-substitution.js";

/**
 * Bodies up to this size are substituted whole, so their Content-Length stays exact; larger or
 * unsized ones stream through a rolling window and go out chunked.
 */
export const WHOLE_BODY_LIMIT = 1024 * 1024;

/** Where one guest request goes: the checked address, and the name the guest used for it. */
export interface ForwardTarget {
  host: string;
  port: number;
  /** The IP literal the policy checked: connected to as is, never resolved again. */
  address: string;
  path: string;
  hostHeader: string;
  /** Upstream TLS (an intercepted CONNECT), verified against the trust in `context`. */
  tls?: UpstreamTls;
}

/**
 * The proxy's upstream TLS: one context holding the trust store (built once: parsing hundreds of
 * CA certificates per request costs ~80 ms) and kept-alive connections, reused by later requests
 * of the same VM to the same checked address and name.
 */
export interface UpstreamTls {
  context: SecureContext;
  agent: HttpsAgent;
}

export function upstreamTls(context: SecureContext): UpstreamTls {
  return { context, agent: new HttpsAgent({ keepAlive: true, maxFreeSockets: 8, timeout: 30_000 }) };
}

export interface SecretForwarding {
  rules: ScopedSecretRule[];
  audit?: SecretAuditRecorder;
  /** The workspace opted in to values in cleartext http:// requests (else only TLS requests get them). */
  cleartextAllowed?: boolean;
  /** Writes one line to the proxy's log (names and hosts, never values). */
  log: (line: string) => void;
}

type Reply = (res: ServerResponse, status: number, reason: string) => void;

function contentLength(rawHeaders: string[]): number | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "content-length") {
      const n = Number(rawHeaders[i + 1]);
      return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
    }
  }
  return undefined;
}

const without = (raw: string[], header: string) => raw.filter((_, i, a) => (i % 2 === 0 ? a[i]!.toLowerCase() !== header : a[i - 1]!.toLowerCase() !== header));
const withoutLength = (raw: string[]) => without(raw, "content-length");

/**
 * Request headers asking for an uncompressed answer: the proxy swaps an echoed value back to its
 * placeholder by matching bytes, which a gzip or br body would hide from it. Only for hosts that
 * may be sent a value (they are the ones that could echo or store one).
 */
const uncompressed = (raw: string[]) => [...without(raw, "accept-encoding"), "Accept-Encoding", "identity"];

async function readWhole(stream: Readable, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error("body larger than declared");
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/**
 * Forwards one guest request to its checked target, writing each in-scope secret's value where its
 * placeholder is (URL, headers, body) and the placeholder back where an upstream echoes a value.
 * A placeholder bound for a host outside its secret's scope stops the request: nothing more is
 * sent upstream (a streaming body's request is aborted), the guest gets 403, the audit counts it.
 */
export function forwardWithSecrets(req: IncomingMessage, res: ServerResponse, target: ForwardTarget, forwarding: SecretForwarding, reply: Reply): void {
  const outbound = Substitution.forRequest(forwarding.rules, target.host, {
    tls: target.tls !== undefined,
    cleartextAllowed: forwarding.cleartextAllowed ?? false,
  });
  const inbound = Substitution.forResponse(forwarding.rules, target.host);
  let refused = false;
  const refuse = (error: SecretScopeRefusal) => {
    if (refused) return;
    refused = true;
    forwarding.audit?.record(error.secret, target.host, "refused");
    forwarding.log(`${error.reason === "out-of-scope" ? "exfiltration attempt" : "request"} refused: ${error.message}`);
    if (!res.headersSent) reply(res, 403, error.message);
    else res.destroy();
  };

  let path: string;
  let headers: string[];
  try {
    path = outbound.text(target.path);
    headers = substituteHeaders(upstreamRequestHeaders(req.rawHeaders, target.hostHeader), outbound);
    if (forwarding.rules.some((r) => r.value !== undefined && inScope(r, target.host))) headers = uncompressed(headers);
  } catch (error) {
    if (error instanceof SecretScopeRefusal) {
      refuse(error);
      return;
    }
    throw error;
  }

  const declared = contentLength(req.rawHeaders);
  const whole = outbound.active && declared !== undefined && declared <= WHOLE_BODY_LIMIT;
  const streamed = outbound.active && !whole && (declared !== undefined || req.headers["transfer-encoding"] !== undefined);
  const send = (body: Buffer | Readable | undefined, rawHeaders: string[]) => {
    if (refused) return;
    const options = {
      host: target.address,
      port: target.port,
      method: req.method,
      path,
      headers: rawHeaders as unknown as OutgoingHttpHeaders,
      setHost: false,
    };
    let upstream;
    try {
      upstream = target.tls
        ? // secureContext is handed on to tls.connect (Node's RequestOptions type does not list it).
          httpsRequest({
            ...options,
            agent: target.tls.agent,
            ...({ secureContext: target.tls.context } as object),
            ...(isIP(target.host) ? {} : { servername: target.host }),
          })
        : httpRequest({ ...options, agent: false });
    } catch (error) {
      // A value with a line break (a PEM file) cannot go into a header: Node refuses the request
      // (its message names the header, never the value) rather than letting it split the head.
      return reply(res, 400, `the request cannot be forwarded: ${(error as Error).message}`);
    }
    upstream.on("response", (answer) => {
      for (const name of outbound.used) forwarding.audit?.record(name, target.host, "sent");
      let responseHeaders = downstreamResponseHeaders(answer.rawHeaders);
      if (!inbound.active) {
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage ?? "", responseHeaders);
        answer.pipe(res);
        return;
      }
      // Names too: a header name is bytes an upstream chooses, like its value and reason phrase.
      responseHeaders = responseHeaders.map((v) => inbound.text(v));
      const noBody = req.method === "HEAD" || answer.statusCode === 204 || answer.statusCode === 304;
      // The value → placeholder swap changes the length: the guest gets the body chunked.
      res.writeHead(answer.statusCode ?? 502, inbound.text(answer.statusMessage ?? ""), noBody ? responseHeaders : withoutLength(responseHeaders));
      pipeline(answer, inbound.stream(), res, () => undefined);
    });
    upstream.on("error", (error) => {
      if (refused) return;
      if (!res.headersSent) reply(res, 502, `cannot reach ${target.host}:${target.port}: ${error.message}`);
      else res.destroy();
    });
    res.on("close", () => upstream.destroy());
    if (body === undefined) {
      req.pipe(upstream);
    } else if (Buffer.isBuffer(body)) {
      upstream.end(body);
    } else {
      body.on("error", (error) => {
        upstream.destroy();
        if (error instanceof SecretScopeRefusal) refuse(error);
        else if (!res.headersSent) reply(res, 400, "the request body ended early");
      });
      body.pipe(upstream);
    }
  };

  if (whole) {
    readWhole(req, WHOLE_BODY_LIMIT)
      .then((data) => {
        const body = outbound.apply(data, true).out;
        send(body, [...withoutLength(headers), "Content-Length", String(body.length)]);
      })
      .catch((error: unknown) => {
        if (error instanceof SecretScopeRefusal) refuse(error);
        else if (!res.headersSent) reply(res, 400, "the request body ended early or was longer than declared");
      });
  } else if (streamed) {
    send(req.pipe(outbound.stream()), [...withoutLength(headers), "Transfer-Encoding", "chunked"]);
  } else {
    send(undefined, headers);
  }
}
