/**
 * Benchmark (not a test): the host-side latency the egress proxy adds to an HTTPS request when it
 * substitutes a scoped secret (TLS terminated with the workspace CA, request rewritten, upstream
 * TLS re-opened) over the floor measured in the same run: the same request through the plain
 * CONNECT tunnel of a workspace without scoped secrets. Two real egress-server processes, one
 * loopback HTTPS server; no VM (the guest's own TLS cost is the same either way), so no lock.
 *
 *   node dist/bench/secret-substitution-latency.js [--requests N]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { mintCertificateAuthority } from "../src/network/egress-ca.js";
import { startTlsTestServer } from "../test/helpers/tls-test-server.js";

const arg = process.argv.indexOf("--requests");
const REQUESTS = arg > 0 ? Number(process.argv[arg + 1]) : 200;
const SERVER = join(import.meta.dirname, "..", "src", "network", "egress-server.js");
const PLACEHOLDER = `pyro-secret-${"5a".repeat(20)}`;
const VALUE = "sk-bench-0123456789abcdef0123456789abcdef";

const dir = await mkdtemp(join(tmpdir(), "pyro-bench-subst-"));
const children: ChildProcess[] = [];
const upstream = await startTlsTestServer(dir, () => "ok\n");

async function startProxy(name: string, extra: string[]): Promise<string> {
  await writeFile(join(dir, "policy.json"), JSON.stringify({ allow: ["127.0.0.1"] }));
  const lifeline = join(dir, `${name}-life.sock`);
  const life = createServer();
  life.on("connection", (s) => s.unref());
  await new Promise<void>((r) => life.listen(lifeline, () => r()));
  life.unref();
  const socket = join(dir, `${name}.sock`);
  const child = spawn(
    process.execPath,
    [
      SERVER,
      `--policy=${join(dir, "policy.json")}`,
      `--count-dir=${join(dir, "counts")}`,
      `--listen=${socket}`,
      `--lifeline=${lifeline}`,
      "--test-resolve=api.test=127.0.0.1",
      `--test-upstream-ca=${upstream.caPath}`,
      ...extra,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  children.push(child);
  await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()));
  return socket;
}

const plainSocket = await startProxy("plain", []);
const ca = await mintCertificateAuthority("bench");
await writeFile(join(dir, "ca.pem"), ca.certPem);
await writeFile(join(dir, "ca-key.pem"), ca.keyPem);
await writeFile(join(dir, "secrets.json"), JSON.stringify([{ name: "API_KEY", placeholder: PLACEHOLDER, value: VALUE, hosts: ["api.test"] }]));
const substSocket = await startProxy("subst", [
  `--secrets=${join(dir, "secrets.json")}`,
  `--tls-ca=${join(dir, "ca.pem")}`,
  `--tls-ca-key=${join(dir, "ca-key.pem")}`,
]);

/** CONNECT + TLS (verifying `caPem`), as a guest client does. */
async function openTunnel(proxySocket: string, caPem: string): Promise<TLSSocket> {
  const raw: Socket = connect(proxySocket);
  raw.write(`CONNECT api.test:${upstream.port} HTTP/1.1\r\nHost: api.test:${upstream.port}\r\n\r\n`);
  await new Promise<void>((resolve) => {
    let seen = "";
    const onData = (d: Buffer) => {
      seen += d.toString("latin1");
      if (seen.includes("\r\n\r\n")) {
        raw.off("data", onData);
        resolve();
      }
    };
    raw.on("data", onData);
  });
  const tls = tlsConnect({ socket: raw, servername: "api.test", ca: caPem });
  await new Promise((r) => tls.once("secureConnect", r));
  return tls;
}

/** One request on a kept-alive tunnel: resolves when the whole (tiny) response arrived. */
function request(tls: TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    let seen = "";
    const onData = (d: Buffer) => {
      seen += d.toString("latin1");
      if (/\r\n\r\n[\s\S]*ok\n/.test(seen) || /\r\n0\r\n\r\n$/.test(seen)) {
        tls.off("data", onData);
        resolve();
      }
    };
    tls.on("data", onData);
    tls.write(`GET /v1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer ${PLACEHOLDER}\r\n\r\n`);
  });
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { median_ms: +q(0.5).toFixed(3), p90_ms: +q(0.9).toFixed(3) };
};

async function measure(proxySocket: string, caPem: string) {
  const fresh: number[] = [];
  const kept: number[] = [];
  const tunnel = await openTunnel(proxySocket, caPem);
  await request(tunnel); // warm
  for (let i = 0; i < REQUESTS; i++) {
    let t = performance.now();
    await request(tunnel);
    kept.push(performance.now() - t);
    if (i % 4 === 0) {
      t = performance.now();
      const one = await openTunnel(proxySocket, caPem);
      await request(one);
      fresh.push(performance.now() - t);
      one.destroy();
    }
  }
  tunnel.destroy();
  return { keep_alive_request: stats(kept), new_connection_request: stats(fresh) };
}

// Interleaved rounds, so load from elsewhere on the machine hits both alike.
const plain = { kept: [] as number[], fresh: [] as number[] };
const subst = { kept: [] as number[], fresh: [] as number[] };
for (let round = 0; round < 3; round++) {
  const a = await measure(plainSocket, await import("node:fs").then((fs) => fs.readFileSync(upstream.caPath, "utf8")));
  const b = await measure(substSocket, ca.certPem);
  plain.kept.push(a.keep_alive_request.median_ms);
  plain.fresh.push(a.new_connection_request.median_ms);
  subst.kept.push(b.keep_alive_request.median_ms);
  subst.fresh.push(b.new_connection_request.median_ms);
}
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const result = {
  requests_per_round: REQUESTS,
  received_value: upstream.received.at(-1)?.headers.authorization === `Bearer ${VALUE}`,
  plain_tunnel_ms: { keep_alive_request: med(plain.kept), new_connection_request: med(plain.fresh) },
  substituting_ms: { keep_alive_request: med(subst.kept), new_connection_request: med(subst.fresh) },
  added_ms: { keep_alive_request: +(med(subst.kept) - med(plain.kept)).toFixed(3), new_connection_request: +(med(subst.fresh) - med(plain.fresh)).toFixed(3) },
  target_added_ms: 5,
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
for (const c of children) c.kill("SIGKILL");
upstream.server.closeAllConnections();
upstream.server.close();
await rm(dir, { recursive: true, force: true });
