import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import { join } from "node:path";
import { LeafCertificates, mintCertificateAuthority } from "../../src/network/egress-ca.js";

/** One request as the loopback HTTPS test server received it. */
export interface ReceivedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A loopback HTTPS server standing in for an API on the internet: its certificate (for any name it
 * is asked for) is signed by a test CA that only pyro's test-only upstream trust knows. It records
 * every request and answers with `echo` applied to it.
 */
/** Git smart HTTP under /git/ (git http-backend as CGI over `root`), for clients sending Basic `password`. */
export interface GitService {
  root: string;
  password: string;
}

function serveGit(req: IncomingMessage, body: Buffer, res: ServerResponse, git: GitService): void {
  const auth = /^Basic (.+)$/.exec(req.headers.authorization ?? "");
  const password = auth ? Buffer.from(auth[1]!, "base64").toString().split(":").slice(1).join(":") : undefined;
  if (password !== git.password) {
    res.writeHead(401, { "www-authenticate": 'Basic realm="test"' });
    return void res.end("unauthorized\n");
  }
  const url = new URL(req.url ?? "/", "https://x");
  const cgi = spawn("git", ["http-backend"], {
    env: {
      PATH: process.env.PATH,
      GIT_PROJECT_ROOT: git.root,
      GIT_HTTP_EXPORT_ALL: "1",
      REQUEST_METHOD: req.method,
      PATH_INFO: url.pathname.slice("/git".length),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers["content-type"] ?? "",
      CONTENT_LENGTH: String(body.length),
      REMOTE_USER: "git",
      REMOTE_ADDR: "127.0.0.1",
    },
  });
  const out: Buffer[] = [];
  cgi.stdout.on("data", (d: Buffer) => out.push(d));
  cgi.on("close", () => {
    const all = Buffer.concat(out);
    const split = all.indexOf("\r\n\r\n") >= 0 ? all.indexOf("\r\n\r\n") : all.indexOf("\n\n");
    const sep = all.indexOf("\r\n\r\n") >= 0 ? 4 : 2;
    const headers: Record<string, string> = {};
    let status = 200;
    for (const lineText of all.subarray(0, split).toString().split(/\r?\n/)) {
      const at = lineText.indexOf(":");
      if (at < 0) continue;
      const name = lineText.slice(0, at).trim().toLowerCase();
      const value = lineText.slice(at + 1).trim();
      if (name === "status") status = Number(value.split(" ")[0]);
      else headers[name] = value;
    }
    res.writeHead(status, headers);
    res.end(all.subarray(split + sep));
  });
  cgi.stdin.end(body);
}

export async function startTlsTestServer(
  dir: string,
  echo: (r: ReceivedRequest) => string = (r) => `ok ${r.method} ${r.url}\n`,
  git?: GitService,
): Promise<{ server: Server; port: number; caPath: string; received: ReceivedRequest[] }> {
  const ca = await mintCertificateAuthority("test-upstream");
  const caPath = join(dir, "test-upstream-ca.pem");
  await writeFile(caPath, ca.certPem);
  const leaves = await LeafCertificates.load(ca);
  const received: ReceivedRequest[] = [];
  const server = createServer({ SNICallback: (name, done) => void leaves.contextFor(name || "127.0.0.1").then((c) => done(null, c), done) }, (req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      const r = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(parts).toString("latin1") };
      received.push(r);
      if (git && r.url.startsWith("/git/")) return serveGit(req, Buffer.concat(parts), res, git);
      res.end(echo(r));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return { server, port: (server.address() as { port: number }).port, caPath, received };
}
