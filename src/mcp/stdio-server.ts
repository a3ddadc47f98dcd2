import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { MCP_MAX_REQUEST_BYTES } from "./request-size.js";
import { toolCallsSettled } from "./server.js";

type RequestId = string | number;

/**
 * Serves MCP on stdin/stdout until the client closes stdin. stdout carries MCP frames only; all
 * logging goes to stderr. A client may send its last requests and close stdin at once, so EOF
 * means "no more requests", not "drop everything": the calls still running finish (a workspace
 * being created is either created and recorded, or cleaned up by its own failure path) and their
 * answers are written before this returns. One-shot VMs still running die with the process.
 */
export async function serveStdio(server: McpServer): Promise<void> {
  // A client that closed stdout too is gone, not an error: calls still running finish all the same.
  process.stdout.on("error", () => undefined);
  const transport = new StdioServerTransport(process.stdin, process.stdout, { maxBufferSize: MCP_MAX_REQUEST_BYTES });
  // A message too large or not JSON-RPC: say so on stderr rather than close without a word.
  transport.onerror = (error) => process.stderr.write(`[mcp] ${error.message}\n`);
  const inputEnded = new Promise<void>((resolve) => {
    process.stdin.once("end", resolve);
    process.stdin.once("close", resolve);
  });
  const transportClosed = new Promise<void>((resolve) => {
    transport.onclose = resolve;
  });
  await server.connect(transport);
  const unanswered = trackUnansweredRequests(transport);
  await Promise.race([inputEnded, transportClosed]);
  await Promise.race([unanswered.drained(), transportClosed]);
  await toolCallsSettled(server); // calls the client cancelled: no answer is due, but their work finishes
  // The last answers were handed to stdout; wait until it took them (or failed: the client is gone).
  await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
  await server.close().catch(() => undefined);
}

/** Request ids seen on the transport and not yet answered (wrapping the handlers the SDK installed). */
function trackUnansweredRequests(transport: StdioServerTransport): { drained: () => Promise<void> } {
  const pending = new Set<RequestId>();
  let wake: (() => void) | undefined;
  const receive = transport.onmessage;
  transport.onmessage = (message: JSONRPCMessage) => {
    if ("method" in message && "id" in message) pending.add(message.id);
    // A cancelled request gets no answer (the SDK drops it): stop waiting for one.
    if ("method" in message && message.method === "notifications/cancelled" && pending.delete(message.params?.requestId as RequestId) && pending.size === 0)
      wake?.();
    receive?.(message);
  };
  const send = transport.send.bind(transport);
  transport.send = (message: JSONRPCMessage) => {
    const sending = send(message);
    const answered = !("method" in message) && "id" in message ? message.id : undefined;
    if (answered !== undefined && pending.delete(answered) && pending.size === 0) wake?.();
    return sending;
  };
  return {
    drained: () => (pending.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => (wake = resolve))),
  };
}
