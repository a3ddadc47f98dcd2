import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";

/**
 * Serves MCP on stdin/stdout until the client closes stdin. stdout carries MCP frames only; all
 * logging goes to stderr. One-shot VMs still running die with the process (exit cleanup).
 */
export async function serveStdio(server: McpServer): Promise<void> {
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    process.stdin.once("end", resolve);
    process.stdin.once("close", resolve);
    transport.onclose = resolve;
  });
  await server.connect(transport);
  await closed;
  await server.close().catch(() => undefined);
}
