import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from "node:http";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { formatAddress } from "../src/network/ip-address.js";
import { parseAbsoluteTarget, parseConnectTarget, ProxyRefusal, upstreamRequestHeaders } from "../src/network/proxy-target.js";

const SERVER = join(import.meta.dirname, "..", "src", "network", "egress-server.js");

describe("proxy request targets", () => {
  it("parses CONNECT targets: names, bracketed IPv6, numeric IPv4 forms", () => {
    assert.deepEqual(parseConnectTarget("Example.COM:443"), { host: "example.com", port: 443 });
    const mapped = parseConnectTarget("[::ffff:7f00:1]:8080");
    assert.equal(mapped.host, "127.0.0.1", "an IPv4-mapped target is the IPv4 it maps");
    assert.equal(formatAddress(mapped.address!), "127.0.0.1");
    assert.equal(mapped.port, 8080);
    assert.equal(parseConnectTarget("[0:0::1]:22").host, "::1");
    for (const numeric of ["2130706433:80", "0x7f000001:80", "0177.0.0.1:80", "127.1:80"]) assert.equal(parseConnectTarget(numeric).host, "127.0.0.1", numeric);
  });

  it("refuses malformed CONNECT targets with 400", () => {
    for (const bad of [
      "::1:80",
      "example.com",
      "example.com:",
      "example.com:0",
      "example.com:65536",
      "example.com:80x",
      "[::1]",
      "[::1:80",
      "[fe80::1%25eth0]:80",
      "exa mple.com:80",
      "a/b:80",
      "%31.0.0.1:80",
      "a..b:80",
      ":80",
      `${"a".repeat(300)}:80`,
    ]) {
      assert.throws(
        () => parseConnectTarget(bad),
        (e) => e instanceof ProxyRefusal && e.status === 400,
        bad,
      );
    }
  });

  it("derives the upstream path and a Host header naming the target from an absolute-form request", () => {
    const t = parseAbsoluteTarget("http://Example.com:8080/p/a?q=1#frag");
    assert.deepEqual(
      { host: t.host, port: t.port, path: t.path, hostHeader: t.hostHeader },
      { host: "example.com", port: 8080, path: "/p/a?q=1", hostHeader: "example.com:8080" },
    );
    assert.equal(parseAbsoluteTarget("http://example.com/").hostHeader, "example.com");
    assert.equal(parseAbsoluteTarget("http://user:pw@example.com:80/x").hostHeader, "example.com");
    assert.equal(parseAbsoluteTarget("http://[2a00:1450::1]:81/").hostHeader, "[2a00:1450::1]:81");
    assert.equal(parseAbsoluteTarget("http://2130706433/").host, "127.0.0.1");
    for (const bad of ["/relative", "https://example.com/", "ftp://example.com/", "http://[::1/"])
      assert.throws(() => parseAbsoluteTarget(bad), ProxyRefusal, bad);
  });

  it("replaces the guest's Host header and drops hop-by-hop and proxy headers", () => {
    const raw = [
      "Host",
      "allowed.example",
      "X-A",
      "1",
      "HOST",
      "fronted.example",
      "Proxy-Authorization",
      "Basic x",
      "Connection",
      "close, X-Secret-Hop",
      "X-Secret-Hop",
      "2",
      "Transfer-Encoding",
      "chunked",
      "Keep-Alive",
      "5",
      "User-Agent",
      "curl",
    ];
    assert.deepEqual(upstreamRequestHeaders(raw, "target.example:8080"), ["Host", "target.example:8080", "X-A", "1", "User-Agent", "curl"]);
  });
});

interface RunningServer {
  child: ChildProcess;
  socket: string;
  /** The VMM's side of the lifeline: ending it plays the VMM's death. */
  lifeline: Promise<Socket>;
  lifelineServer: NetServer;
}

describe("egress server (real processes)", () => {
  let dir: string;
  let web: Server;
  let webPort: number;
  const received: { url: string; headers: IncomingHttpHeaders }[] = [];
  const servers: RunningServer[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pyro-egress-"));
    web = createHttpServer((req, res) => {
      received.push({ url: req.url ?? "", headers: req.headers });
      res.end(`served ${req.url} for host ${req.headers.host}`);
    });
    await new Promise<void>((r) => web.listen(0, "127.0.0.1", () => r()));
    webPort = (web.address() as { port: number }).port;
  });
  after(async () => {
    for (const s of servers) {
      s.child.kill("SIGKILL");
      s.lifelineServer.close();
      void s.lifeline.then((l) => l.destroy());
    }
    web.closeAllConnections();
    web.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function startServer(name: string, allow: string[], extra: string[] = []): Promise<RunningServer> {
    const policy = join(dir, `${name}.json`);
    await writeFile(policy, JSON.stringify({ allow }));
    const lifelinePath = join(dir, `${name}-life.sock`);
    const lifelineServer = createServer();
    const lifeline = new Promise<Socket>((resolve) => lifelineServer.once("connection", resolve));
    await new Promise<void>((r) => lifelineServer.listen(lifelinePath, () => r()));
    const socket = join(dir, `${name}.sock`);
    const child = spawn(
      process.execPath,
      [SERVER, `--policy=${policy}`, `--count-dir=${join(dir, "counts")}`, `--listen=${socket}`, `--lifeline=${lifelinePath}`, ...extra],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once("data", (d: Buffer) => (d.toString() === "ready\n" ? resolve() : reject(new Error(d.toString()))));
      child.once("exit", (code) => reject(new Error(`egress server exited with ${code}`)));
    });
    const running = { child, socket, lifeline, lifelineServer };
    servers.push(running);
    return running;
  }

  /** Sends raw bytes through one guest connection; resolves with everything received until close or `quietMs` of silence. */
  function exchange(server: RunningServer, request: string, quietMs = 400): Promise<string> {
    return new Promise((resolve) => {
      const s = connect(server.socket);
      let out = "";
      let timer = setTimeout(() => s.destroy(), quietMs * 5);
      s.on("data", (d) => {
        out += d;
        clearTimeout(timer);
        timer = setTimeout(() => s.destroy(), quietMs);
      });
      s.on("error", () => undefined);
      s.on("close", () => {
        clearTimeout(timer);
        resolve(out);
      });
      s.write(request);
    });
  }

  /** Opens a connection and waits until the server has taken it (admitted or answered). */
  async function hold(server: RunningServer): Promise<{ socket: Socket; answer: () => string }> {
    const socket = connect(server.socket);
    let out = "";
    socket.on("data", (d) => (out += d));
    socket.on("error", () => undefined);
    await new Promise((r) => socket.once("connect", r));
    await new Promise((r) => setTimeout(r, 100));
    return { socket, answer: () => out };
  }

  it("refuses the host's loopback in every notation, over absolute-form and CONNECT, and never connects", async () => {
    const server = await startServer("open", []);
    const before = received.length;
    const hosts = [
      "[::ffff:127.0.0.1]",
      "[::ffff:7f00:1]",
      "[0:0:0:0:0:FFFF:7F00:0001]",
      "[::7f00:1]",
      "[64:ff9b::7f00:1]",
      "[2002:7f00:1::]",
      "2130706433",
      "0x7f000001",
      "0177.0.0.1",
      "127.1",
      "127.0.0.1",
      "localhost",
    ];
    for (const host of hosts) {
      assert.match(
        await exchange(server, `GET http://${host}:${webPort}/x HTTP/1.1\r\nHost: example.com\r\n\r\n`),
        /^HTTP\/1\.1 403 Forbidden[\s\S]*pyro egress: .*non-public address/,
        `GET ${host}`,
      );
      assert.match(
        await exchange(server, `CONNECT ${host}:${webPort} HTTP/1.1\r\nHost: example.com\r\n\r\n`),
        /^HTTP\/1\.1 403 Forbidden[\s\S]*pyro egress: .*non-public address/,
        `CONNECT ${host}`,
      );
    }
    assert.equal(received.length, before, "the host service never saw a request");
  });

  it("answers refused destinations and malformed requests as the one-shot proxy did", async () => {
    const server = await startServer("listed", ["deb.debian.org"]);
    assert.match(
      await exchange(server, "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"),
      /403 Forbidden[\s\S]*not in this workspace's egress allowlist/,
    );
    assert.match(await exchange(server, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"), /403 Forbidden/);
    assert.match(await exchange(server, "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.match(await exchange(server, "GET http://a b/ HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 400 /);
  });

  it("sends a Host header naming the checked target, and decides every request of a kept-alive connection", async () => {
    const server = await startServer("explicit", ["127.0.0.1"]);
    const before = received.length;
    const out = await exchange(
      server,
      `GET http://127.0.0.1:${webPort}/first HTTP/1.1\r\nHost: fronted.example\r\n\r\nGET http://127.0.0.2:${webPort}/second HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
    );
    assert.match(out, new RegExp(`200 OK[\\s\\S]*served /first for host 127\\.0\\.0\\.1:${webPort}`));
    assert.match(out, /403 Forbidden[\s\S]*127\.0\.0\.2 is not in this workspace's egress allowlist/);
    assert.deepEqual(
      received.slice(before).map((r) => [r.url, r.headers.host]),
      [["/first", `127.0.0.1:${webPort}`]],
    );
    // An explicitly allowed address is reached in its mapped spelling too, and tunnels work.
    const tunnel = await exchange(server, `CONNECT [::ffff:7f00:1]:${webPort} HTTP/1.1\r\n\r\nGET /tunnel HTTP/1.1\r\nHost: t\r\n\r\n`);
    assert.match(tunnel, /^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/1\.1 200 OK[\s\S]*served \/tunnel/);
  });

  it("caps connections per VM and host-wide, answering the extra ones 503 at once", async () => {
    const a = await startServer("cap-a", [], ["--max-connections=2", "--max-host-connections=3"]);
    const b = await startServer("cap-b", [], ["--max-connections=2", "--max-host-connections=3"]);
    const a1 = await hold(a);
    const a2 = await hold(a);
    const a3 = await hold(a);
    assert.equal(a1.answer() + a2.answer(), "", "admitted connections wait for their request");
    assert.match(a3.answer(), /^HTTP\/1\.1 503 [\s\S]*this VM already has 2 open connections through the egress proxy \(the limit is 2\)/);
    const b1 = await hold(b);
    const b2 = await hold(b);
    assert.equal(b1.answer(), "");
    assert.match(b2.answer(), /^HTTP\/1\.1 503 [\s\S]*already hold 3 egress connections \(the host-wide limit is 3\)/);
    // Closing one frees its slot.
    a1.socket.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const b3 = await hold(b);
    assert.equal(b3.answer(), "");
    for (const c of [a2, a3, b1, b2, b3]) c.socket.destroy();
  });

  it("frees the slot of a connection that sends no request in time", async () => {
    const server = await startServer("slow", [], ["--max-connections=1", "--head-timeout-ms=300"]);
    const silent = await hold(server);
    await new Promise((r) => setTimeout(r, 700));
    assert.match(silent.answer(), /^HTTP\/1\.1 408 /);
    const next = await hold(server);
    assert.equal(next.answer(), "", "the slot is free again");
    next.socket.destroy();
  });

  it("exits with its VMM: the end of the lifeline removes its socket and its host-wide count", async () => {
    const server = await startServer("lifeline", []);
    const counts = join(dir, "counts");
    assert.ok((await readdir(counts)).includes(String(server.child.pid)));
    const held = await hold(server);
    const guestSideClosed = new Promise((r) => held.socket.once("close", r));
    const exited = new Promise((r) => server.child.once("exit", r));
    (await server.lifeline).destroy();
    assert.equal(await exited, 0);
    assert.equal(existsSync(server.socket), false);
    assert.equal((await readdir(counts)).includes(String(server.child.pid)), false);
    await guestSideClosed; // the guest's connections end with it
  });

  it("ignores the count of a server that died without cleaning up", async () => {
    const dead = await startServer("dead", [], ["--max-connections=1", "--max-host-connections=1"]);
    const taken = await hold(dead);
    dead.child.kill("SIGKILL");
    await new Promise((r) => dead.child.once("exit", r));
    taken.socket.destroy();
    const alive = await startServer("alive", [], ["--max-connections=1", "--max-host-connections=1"]);
    const c = await hold(alive);
    assert.equal(c.answer(), "", "the dead server's slot is not counted");
    c.socket.destroy();
  });
});
