import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { PyroError } from "../errors.js";
import { MCP_MAX_REQUEST_BYTES } from "./request-size.js";

export interface HttpServeOptions {
  host: string;
  port: number;
  /** Every request must carry `Authorization: Bearer <token>`. */
  token: string;
  /** A fresh MCP server per session (an McpServer serves one transport). */
  createServer: () => McpServer;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
/** Shorter tokens are guessable (an empty one would match a request with no Authorization at all). */
export const MIN_TOKEN_BYTES = 16;

export function newToken(): string {
  return randomBytes(24).toString("base64url");
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.startsWith("Bearer ") ? header.slice(7) : "");
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Whether a URL names a loopback host on our bound port. */
function loopbackUrl(value: string, port: number): boolean {
  try {
    const url = new URL(value);
    const urlPort = url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port);
    return LOOPBACK.has(url.hostname.replace(/^\[|\]$/g, "")) && urlPort === port && url.pathname === "/" && !url.username && !url.password;
  } catch {
    return false;
  }
}

/** Browsers send Origin: only pages served from this same loopback host may talk to us. */
function originAllowed(origin: string | undefined, port: number): boolean {
  if (!origin) return true; // not a browser
  return loopbackUrl(origin, port);
}

/**
 * The Host header must name a loopback host and our port: a DNS-rebound page reaches 127.0.0.1 under
 * its own name, so its requests carry a foreign Host even when the browser sends no Origin.
 */
function hostAllowed(host: string | undefined, port: number): boolean {
  return !!host && !/[/?#@\\\s]/.test(host) && loopbackUrl(`http://${host}/`, port);
}

function reject(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { "content-type": "application/json", ...(status === 401 ? { "www-authenticate": "Bearer" } : {}) });
  res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message }, id: null }));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MCP_MAX_REQUEST_BYTES) throw new PyroError("INVALID_ARGUMENT", `request body larger than ${MCP_MAX_REQUEST_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined;
}

/**
 * Streamable HTTP on a loopback address, bearer token, Host and Origin checked on every request.
 * Port 0 binds a free port; the bound one comes back (and is the one origins must name).
 */
export async function serveHttp(options: HttpServeOptions): Promise<{ server: Server; port: number }> {
  if (!LOOPBACK.has(options.host)) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `refusing to serve on ${options.host}: pyro's MCP HTTP endpoint binds loopback addresses only (127.0.0.1, ::1, localhost)`,
    );
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new PyroError("INVALID_ARGUMENT", `port must be from 1 to 65535 (or 0 to pick a free one), got ${options.port}`);
  }
  if (Buffer.byteLength(options.token, "utf8") < MIN_TOKEN_BYTES) {
    throw new PyroError("INVALID_ARGUMENT", `the bearer token must be at least ${MIN_TOKEN_BYTES} bytes; leave it unset to get a random one`);
  }
  let boundPort = options.port;
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const httpServer = createServer((req, res) => {
    void (async () => {
      if (!tokenMatches(req.headers.authorization, options.token)) return reject(res, 401, "missing or wrong bearer token");
      if (!hostAllowed(req.headers.host, boundPort)) return reject(res, 403, "host not allowed: address this endpoint as a loopback host and its port");
      if (!originAllowed(req.headers.origin, boundPort)) return reject(res, 403, "origin not allowed");
      if (!req.url?.startsWith("/mcp")) return reject(res, 404, "the MCP endpoint is /mcp");
      const sessionId = req.headers["mcp-session-id"];
      let transport = typeof sessionId === "string" ? sessions.get(sessionId) : undefined;
      const body = req.method === "POST" ? await readJson(req) : undefined;
      if (!transport) {
        if (req.method !== "POST" || !isInitializeRequest(body)) return reject(res, 400, "no valid session; start with an initialize request");
        const created = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void sessions.set(id, created),
        });
        created.onclose = () => {
          if (created.sessionId) sessions.delete(created.sessionId);
        };
        await options.createServer().connect(created);
        transport = created;
      }
      await transport.handleRequest(req, res, body);
    })().catch((error: unknown) => {
      if (!res.headersSent) reject(res, 400, error instanceof Error ? error.message : String(error));
    });
  });
  await new Promise<void>((resolve, rejectListen) => {
    httpServer.once("error", (error: NodeJS.ErrnoException) => {
      const why = error.code === "EADDRINUSE" ? "the port is already in use" : error.code === "EACCES" ? "permission denied" : error.message;
      rejectListen(new PyroError("INVALID_ARGUMENT", `cannot serve on ${options.host}:${options.port}: ${why}; choose another port (0 picks a free one)`));
    });
    httpServer.listen(options.port, options.host, () => resolve());
  });
  boundPort = (httpServer.address() as AddressInfo).port;
  return { server: httpServer, port: boundPort };
}
