#!/usr/bin/env node
/**
 * The egress proxy of one VM: a long-lived HTTP proxy on a unix socket in the VM's run directory.
 * Each guest connection to the proxy address reaches it through a tiny forwarder QEMU starts
 * (socat), so a connection costs the host a few MiB instead of a Node process. Speaks CONNECT for
 * TLS and absolute-form requests for plain HTTP; every request is checked against the policy file
 * and connected to exactly the address that was checked.
 *
 * It lives exactly as long as its VM: it holds a connection to a socket that only the VMM serves
 * (`--lifeline`) and exits when that connection ends, however the VMM died. If it crashes, the
 * VM loses egress but nothing is left behind.
 *
 * With scoped secrets (--secrets), placeholders in requests are replaced by values for the hosts
 * each secret is scoped to, and refused elsewhere; with a CA (--tls-ca, --tls-ca-key) CONNECT
 * tunnels are terminated with a minted leaf and re-opened upstream with the host's trust store,
 * so HTTPS requests can be substituted too. Values go only into TLS requests unless the workspace
 * opted in to cleartext http:// (--secrets-over-http).
 *
 *   egress-server.js --policy=FILE --count-dir=DIR --listen=SOCKET --lifeline=SOCKET
 *                    [--max-connections=N] [--max-host-connections=N] [--head-timeout-ms=N]
 *                    [--secrets=FILE] [--audit=FILE] [--tls-ca=FILE --tls-ca-key=FILE] [--secrets-over-http]
 *                    [--test-resolve=NAME=IP,…] [--test-upstream-ca=FILE]   (tests only; see egress-launch.ts)
 */
import { lookup } from "node:dns/promises";
import { chmodSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, createServer, type Socket } from "node:net";
import { createSecureContext, getCACertificates, TLSSocket } from "node:tls";
import { ConnectionBudget, EGRESS_CONNECTION_LIMITS } from "./connection-budget.js";
import { decideEgress, type EgressDecision, type EgressPolicy } from "./egress-policy.js";
import { formatAddress } from "./ip-address.js";
import { parseAbsoluteTarget, parseConnectTarget, ProxyRefusal, type ProxyTarget } from "./proxy-target.js";
import { SecretAuditRecorder } from "./secret-audit.js";
import { forwardWithSecrets, upstreamTls, type ForwardTarget, type SecretForwarding } from "./secret-forwarding.js";
import type { ScopedSecretRule } from "./secret-substitution.js";

/** A guest connection must finish its request head within this, so a silent one frees its slot. */
const HEAD_TIMEOUT_MS = 60_000;
/** How long to wait for the VMM's lifeline socket to appear before giving up (the VMM never started). */
const LIFELINE_WAIT_MS = 60_000;

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

function option(name: string): string | undefined {
  return process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

function requiredOption(name: string): string {
  const value = option(name);
  if (!value) {
    process.stderr.write(`egress-server: --${name}= is required\n`);
    process.exit(2);
  }
  return value;
}

function numberOption(name: string, fallback: number): number {
  const value = Number(option(name) ?? fallback);
  return Number.isSafeInteger(value) && value > 0 ? value : fallback;
}

/** A complete HTTP response the proxy writes itself, then closes. */
function refusalResponse(status: number, reason: string): string {
  const body = `pyro egress: ${reason}\n`;
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

function loadPolicy(path: string): EgressPolicy {
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as { allow?: unknown; hostPublic?: unknown };
    const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((a) => typeof a === "string");
    if (strings(parsed.allow) && (parsed.hostPublic === undefined || strings(parsed.hostPublic)))
      return { allow: parsed.allow, hostPublic: parsed.hostPublic ?? [] };
  } catch {
    // fall through
  }
  // An unreadable policy must not open anything: refuse every destination.
  return { allow: ["policy-unreadable.invalid"] };
}

/** --test-resolve=NAME=IP,…: names the proxy resolves to fixed addresses (the policy still applies). */
function testResolutions(): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of (option("test-resolve") ?? "").split(",").filter(Boolean)) {
    const at = pair.indexOf("=");
    if (at > 0) map.set(pair.slice(0, at).toLowerCase(), pair.slice(at + 1));
  }
  return map;
}

/** Everything on stdin (memory-only secret values: pyro writes them there and closes it). */
async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of process.stdin) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString("utf8");
}

/** The scoped secrets file, with memory-only values filled in from stdin when `--secret-values=stdin`. */
async function loadSecretRules(path: string | undefined): Promise<ScopedSecretRule[]> {
  if (!path) return [];
  const rules = JSON.parse(readFileSync(path, "utf8")) as ScopedSecretRule[];
  if (
    !Array.isArray(rules) ||
    !rules.every(
      (r) =>
        typeof r.name === "string" && typeof r.placeholder === "string" && (r.value === undefined || typeof r.value === "string") && Array.isArray(r.hosts),
    )
  ) {
    throw new Error(`${path} is not a list of scoped secrets`);
  }
  const memory = option("secret-values") === "stdin" ? (JSON.parse(await readStdin()) as Record<string, string>) : {};
  // A memory-only secret whose value is not given (the VM was restarted) keeps no value: its placeholder is refused everywhere.
  return rules.map((r) => (r.value === undefined && typeof memory[r.name] === "string" ? { ...r, value: memory[r.name] } : r));
}

async function decide(policyPath: string, target: ProxyTarget, resolved: Map<string, string>): Promise<EgressDecision> {
  let addresses: string[];
  if (target.address) addresses = [formatAddress(target.address)];
  else if (resolved.has(target.host)) addresses = [resolved.get(target.host)!];
  else {
    try {
      addresses = (await lookup(target.host, { all: true, verbatim: true })).map((a) => a.address);
    } catch {
      addresses = [];
    }
  }
  return decideEgress(loadPolicy(policyPath), target.host, addresses);
}

async function main(): Promise<void> {
  const policyPath = requiredOption("policy");
  const listenPath = requiredOption("listen");
  const lifelinePath = requiredOption("lifeline");
  const headTimeoutMs = numberOption("head-timeout-ms", HEAD_TIMEOUT_MS);
  const resolved = testResolutions();
  const forwarding: SecretForwarding = {
    rules: await loadSecretRules(option("secrets")),
    ...(option("audit") ? { audit: new SecretAuditRecorder(option("audit")!) } : {}),
    cleartextAllowed: process.argv.includes("--secrets-over-http"),
    log: (line) => process.stderr.write(`egress-server: ${new Date().toISOString()} ${line}\n`),
  };
  const caPath = option("tls-ca");
  // Loaded only when intercepting: the certificate library is not needed by a plain tunnel.
  const leaves = caPath
    ? await (await import("./egress-ca.js")).LeafCertificates.load({
        certPem: readFileSync(caPath, "utf8"),
        keyPem: readFileSync(requiredOption("tls-ca-key"), "utf8"),
      })
    : undefined;
  const testCa = option("test-upstream-ca");
  // The host's own trust store (Node's bundle and the system's), never anything the guest supplies.
  const upstreamTlsSettings = leaves
    ? upstreamTls(
        createSecureContext({ ca: [...getCACertificates("bundled"), ...getCACertificates("system"), ...(testCa ? [readFileSync(testCa, "utf8")] : [])] }),
      )
    : undefined;
  const budget = new ConnectionBudget(
    requiredOption("count-dir"),
    numberOption("max-connections", EGRESS_CONNECTION_LIMITS.perVm),
    numberOption("max-host-connections", EGRESS_CONNECTION_LIMITS.host),
  );

  const shutdown = (code: number) => {
    budget.dispose();
    rmSync(listenPath, { force: true });
    process.exit(code);
  };
  process.on("uncaughtException", (error) => {
    process.stderr.write(`egress-server: ${error.stack ?? error}\n`);
    shutdown(1);
  });
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(signal, () => shutdown(0));

  const reply = (res: ServerResponse, status: number, reason: string) => {
    const body = `pyro egress: ${reason}\n`;
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), connection: "close" });
    res.end(body);
  };

  // Node only enforces headersTimeout on servers that listen themselves; this one is handed its
  // connections after admission, so a connection's first request head is timed here.
  const headTimers = new WeakMap<Socket, NodeJS.Timeout>();
  const requestBegan = (socket: Socket) => clearTimeout(headTimers.get(socket));

  const proxy = createHttpServer({ requestTimeout: 0 });
  proxy.on("request", (req: IncomingMessage, res: ServerResponse) => {
    requestBegan(req.socket);
    void (async () => {
      let target;
      try {
        target = parseAbsoluteTarget(req.url ?? "");
      } catch (error) {
        if (error instanceof ProxyRefusal) return reply(res, error.status, error.message);
        throw error;
      }
      const decision = await decide(policyPath, target, resolved);
      if (!decision.allowed) return reply(res, 403, decision.reason);
      forwardWithSecrets(
        req,
        res,
        { host: target.host, port: target.port, address: decision.address, path: target.path, hostHeader: target.hostHeader },
        forwarding,
        reply,
      );
    })().catch(() => res.destroy());
  });

  proxy.on("connect", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    requestBegan(socket);
    socket.on("error", () => socket.destroy());
    void (async () => {
      let target;
      try {
        target = parseConnectTarget(req.url ?? "");
      } catch (error) {
        if (error instanceof ProxyRefusal) return void socket.end(refusalResponse(error.status, error.message));
        throw error;
      }
      const decision = await decide(policyPath, target, resolved);
      if (!decision.allowed) return void socket.end(refusalResponse(403, decision.reason));
      if (leaves) {
        const context = await leaves.contextFor(target.host);
        socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
        if (head.length) socket.unshift(head);
        const tls = new TLSSocket(socket, { isServer: true, secureContext: context, ALPNProtocols: ["http/1.1"] });
        tls.on("error", () => tls.destroy());
        const port = target.port;
        const hostPart = target.address?.length === 16 ? `[${target.host}]` : target.host;
        intercepted.set(tls, {
          host: target.host,
          port,
          address: decision.address,
          path: "/",
          hostHeader: port === 443 ? hostPart : `${hostPart}:${port}`,
          tls: upstreamTlsSettings!,
        });
        interceptor.emit("connection", tls);
        return;
      }
      const upstream = connect({ host: decision.address, port: target.port });
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
        if (head.length) upstream.write(head);
        socket.pipe(upstream);
        upstream.pipe(socket);
      });
      upstream.on("error", (error) => {
        if (!connected) socket.end(refusalResponse(502, `cannot reach ${target.host}:${target.port}: ${error.message}`));
        else socket.destroy();
      });
      // A clean end travels through the pipes (flushing what is buffered); only a failure cuts.
      upstream.on("close", (hadError) => hadError && socket.destroy());
      socket.on("close", () => upstream.destroy());
    })().catch(() => socket.destroy());
  });

  // Requests inside a terminated CONNECT: origin-form, bound for the tunnel's checked target only
  // (the Host header is replaced by the target's, as for plain HTTP).
  const intercepted = new WeakMap<Socket, ForwardTarget>();
  const interceptor = createHttpServer({ requestTimeout: 0 });
  interceptor.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const tunnel = intercepted.get(req.socket);
    if (!tunnel) return reply(res, 400, "no tunnel");
    if (!(req.url ?? "").startsWith("/")) return reply(res, 400, "requests inside a CONNECT tunnel must be in origin form (/path)");
    try {
      forwardWithSecrets(req, res, { ...tunnel, path: req.url! }, forwarding, reply);
    } catch {
      res.destroy(); // one broken request must not take the VM's egress down with the process
    }
  });
  interceptor.on("upgrade", (_req: IncomingMessage, socket: Socket) => {
    socket.on("error", () => socket.destroy());
    socket.end(refusalResponse(501, "protocol upgrades (websockets) are not proxied in a workspace whose TLS the proxy inspects"));
  });
  interceptor.on("clientError", (_error: Error, socket: Socket) => {
    if (socket.writable) socket.end(refusalResponse(400, "malformed request"));
    socket.destroy();
  });

  proxy.on("upgrade", (_req: IncomingMessage, socket: Socket) => {
    requestBegan(socket);
    socket.on("error", () => socket.destroy());
    socket.end(refusalResponse(501, "protocol upgrades over plain HTTP are not proxied; use https/wss (CONNECT)"));
  });

  proxy.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    const status = error.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : error.code === "HPE_HEADER_OVERFLOW" ? 431 : 400;
    if (socket.writable) socket.end(refusalResponse(status, status === 408 ? "no complete request arrived in time" : "malformed request"));
    socket.destroy();
  });

  // Admission happens before HTTP parsing: a connection over the limits is answered and closed
  // at once, holding nothing.
  const listener = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    const admission = budget.admit();
    if (!admission.admitted) {
      socket.end(refusalResponse(503, admission.reason));
      socket.resume();
      setTimeout(() => socket.destroy(), 2_000).unref();
      return;
    }
    socket.once("close", admission.release);
    const timer = setTimeout(() => {
      socket.end(refusalResponse(408, `no request arrived within ${headTimeoutMs / 1000} s`));
      setTimeout(() => socket.destroy(), 1_000).unref();
    }, headTimeoutMs);
    headTimers.set(socket, timer);
    socket.once("close", () => clearTimeout(timer));
    proxy.emit("connection", socket);
  });
  rmSync(listenPath, { force: true });
  process.umask(0o177);
  listener.listen(listenPath, () => {
    chmodSync(listenPath, 0o600);
    holdLifeline(lifelinePath, () => shutdown(0));
    process.stdout.write("ready\n");
  });
  listener.on("error", (error) => {
    process.stderr.write(`egress-server: cannot listen on ${listenPath}: ${error.message}\n`);
    shutdown(1);
  });
}

/** Connects to the VMM's lifeline socket (retrying until the VMM has created it); `onEnd` when it ends. */
function holdLifeline(path: string, onEnd: () => void): void {
  const deadline = Date.now() + LIFELINE_WAIT_MS;
  const attempt = () => {
    const socket = connect(path);
    let connected = false;
    socket.once("connect", () => (connected = true));
    socket.on("data", () => undefined); // the VMM never writes; keep the stream flowing regardless
    socket.on("error", () => undefined);
    socket.once("close", () => {
      if (connected) onEnd();
      else if (Date.now() < deadline) setTimeout(attempt, 25);
      else {
        process.stderr.write(`egress-server: the VMM never opened ${path}; exiting\n`);
        onEnd();
      }
    });
  };
  attempt();
}

main().catch((error: unknown) => {
  process.stderr.write(`egress-server: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
