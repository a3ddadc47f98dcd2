import { writeFile } from "node:fs/promises";
import type { IncomingHttpHeaders } from "node:http";
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
export async function startTlsTestServer(dir: string, echo: (r: ReceivedRequest) => string = (r) => `ok ${r.method} ${r.url}\n`): Promise<{ server: Server; port: number; caPath: string; received: ReceivedRequest[] }> {
  const ca = await mintCertificateAuthority("test-upstream");
  const caPath = join(dir, "test-upstream-ca.pem");
  await writeFile(caPath, ca.certPem);
  const leaves = await LeafCertificates.load(ca);
  const received: ReceivedRequest[] = [];
  const server = createServer({ SNICallback: (name, done) => void leaves.contextFor(name || "127.0.0.1").then((c) => done(null, c), done) }, (req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      const r = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(parts).toString("utf8") };
      received.push(r);
      res.end(echo(r));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return { server, port: (server.address() as { port: number }).port, caPath, received };
}
