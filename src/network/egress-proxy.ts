#!/usr/bin/env node
/**
 * One guest connection to the egress proxy address, on stdin/stdout (QEMU's slirp `guestfwd ...
 * -cmd:` spawns this per connection). Speaks just enough HTTP proxy: CONNECT for TLS and
 * absolute-form requests for plain HTTP. Each destination is checked against the workspace's
 * policy file before anything is sent, and connected by the checked address (no DNS rebinding).
 *
 *   egress-proxy.js --policy=/path/to/egress-policy.json
 */
import { lookup } from "node:dns/promises";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { decideEgress, type EgressPolicy } from "./egress-policy.js";

const MAX_HEAD = 32 * 1024;

function fail(status: number, reason: string): void {
  process.stdout.write(`HTTP/1.1 ${status} ${status === 403 ? "Forbidden" : "Bad Gateway"}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\npyro egress: ${reason}\n`, () => process.exit(0));
}

function loadPolicy(): EgressPolicy {
  const arg = process.argv.find((a) => a.startsWith("--policy="));
  try {
    return JSON.parse(readFileSync(arg!.slice("--policy=".length), "utf8")) as EgressPolicy;
  } catch {
    return { allow: [] };
  }
}

async function resolve(host: string): Promise<string[]> {
  try {
    return (await lookup(host.replace(/^\[|\]$/g, ""), { all: true, verbatim: true })).map((a) => a.address);
  } catch {
    return [];
  }
}

function splice(upstream: Socket, initial: Buffer): void {
  if (initial.length) upstream.write(initial);
  process.stdin.pipe(upstream);
  upstream.pipe(process.stdout);
  upstream.on("error", () => process.exit(0));
  upstream.on("close", () => process.exit(0));
  process.stdin.on("end", () => upstream.end());
}

async function handle(head: string, rest: Buffer): Promise<void> {
  const [requestLine = "", ...headerLines] = head.split("\r\n");
  const [method = "", target = "", version = "HTTP/1.1"] = requestLine.split(" ");
  let host: string;
  let port: number;
  let forward: Buffer;
  if (method === "CONNECT") {
    const at = target.lastIndexOf(":");
    host = target.slice(0, at);
    port = Number(target.slice(at + 1));
    forward = rest;
  } else {
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      return fail(400, "send requests through the proxy in absolute form (set http_proxy)");
    }
    if (url.protocol !== "http:") return fail(400, `unsupported scheme ${url.protocol}`);
    host = url.hostname;
    port = Number(url.port || 80);
    const headers = headerLines.filter((l) => l && !/^proxy-/i.test(l));
    forward = Buffer.concat([Buffer.from(`${method} ${url.pathname}${url.search} ${version}\r\n${headers.join("\r\n")}\r\n\r\n`), rest]);
  }
  if (!host || !(port > 0 && port < 65536)) return fail(400, `bad destination '${target}'`);
  const decision = decideEgress(loadPolicy(), host, await resolve(host));
  if (!decision.allowed) return fail(403, decision.reason);
  const upstream = connect({ host: decision.address, port });
  upstream.once("error", (e) => fail(502, `cannot reach ${host}:${port}: ${e.message}`));
  upstream.once("connect", () => {
    if (method === "CONNECT") process.stdout.write("HTTP/1.1 200 Connection established\r\n\r\n");
    splice(upstream, forward);
  });
}

let buffered = Buffer.alloc(0);
const onData = (chunk: Buffer) => {
  buffered = Buffer.concat([buffered, chunk]);
  const end = buffered.indexOf("\r\n\r\n");
  if (end < 0) {
    if (buffered.length > MAX_HEAD) fail(400, "request head too large");
    return;
  }
  process.stdin.off("data", onData);
  process.stdin.pause();
  void handle(buffered.subarray(0, end).toString("latin1"), buffered.subarray(end + 4));
};
process.stdin.on("data", onData);
process.stdin.on("end", () => {
  if (buffered.indexOf("\r\n\r\n") < 0) process.exit(0);
});
