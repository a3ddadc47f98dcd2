import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { tmpdir } from "node:os";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { CLI } from "./vm-fixtures.js";

/**
 * A real MCP client (the SDK's) speaking stdio to a spawned `pyro mcp serve`. The server runs in
 * `cwd`, by default outside any Git checkout (so workspace_create without seed_path starts empty,
 * not seeded from this repository).
 */
export async function connectStdio(
  args: string[] = [],
  env: Record<string, string> = {},
  cwd: string = tmpdir(),
): Promise<{ client: Client; transport: StdioClientTransport }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, "mcp", "serve", ...args],
    cwd,
    env: { ...(process.env as Record<string, string>), ...env },
    stderr: "pipe",
  });
  const client = new Client({ name: "pyro-tests", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

export function toolText(result: unknown): string {
  const content = (result as { content: { type: string; text: string }[] }).content;
  return content.map((c) => c.text).join("");
}

export function toolJson<T = Record<string, unknown>>(result: unknown): T {
  if ((result as { isError?: boolean }).isError) throw new Error(`tool failed: ${toolText(result)}`);
  return JSON.parse(toolText(result)) as T;
}
