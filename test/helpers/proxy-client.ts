import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";

/**
 * What a guest does to reach an HTTPS host through pyro's egress proxy, done by hand so tests can
 * send any bytes: CONNECT `host:port` over the proxy's socket, TLS to `host` trusting `ca` (the
 * workspace CA, or another one), then one raw request. Resolves to everything that came back: the
 * proxy's own answer when it refused the CONNECT, else the upstream's response bytes.
 */
export async function httpsThroughProxy(options: { socket: string; host: string; port: number; ca: string; request: string }): Promise<Buffer> {
  const { socket, host, port, ca, request } = options;
  const raw = connect(socket);
  raw.on("error", () => undefined);
  raw.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  const established = await new Promise<string>((resolve) => {
    let seen = "";
    const onData = (d: Buffer) => {
      seen += d.toString("latin1");
      if (!seen.includes("\r\n\r\n")) return;
      raw.off("data", onData);
      resolve(seen);
    };
    raw.on("data", onData);
    raw.on("close", () => resolve(seen)); // a proxy that died answers nothing
  });
  if (!established.startsWith("HTTP/1.1 200")) return Buffer.from(established, "latin1");
  return new Promise((resolve, reject) => {
    const tls = tlsConnect({ socket: raw, servername: host, ca }, () => tls.write(request));
    const out: Buffer[] = [];
    tls.on("data", (d: Buffer) => out.push(d));
    tls.on("error", (error) => (out.length ? resolve(Buffer.concat(out)) : reject(error)));
    tls.on("close", () => resolve(Buffer.concat(out)));
  });
}
