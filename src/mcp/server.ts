import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { z } from "zod";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../paths.js";
import type { Pyro } from "../sdk/pyro.js";
import { resolveToolSet, TOOL_FACTORIES, type ModeName, type ProfileName } from "./profiles.js";
import type { ToolDefinition } from "./tool-definition.js";
import { toolErrorResult } from "./tool-errors.js";

export interface ServerOptions {
  pyro: Pyro;
  profile?: ProfileName;
  mode?: ModeName;
}

/** The tool definitions a profile/mode serves, descriptions included (also used by benchmarks). */
export function toolDefinitions(profile?: ProfileName, mode?: ModeName): ToolDefinition[] {
  const set = resolveToolSet(profile, mode);
  return set.tools.map((name) => {
    const tool = TOOL_FACTORIES[name]!(set.surface);
    const description = set.descriptions?.[name];
    return description ? { ...tool, description } : tool;
  });
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "0.0.0";
  }
}

/** Tool calls still running, per server: a cancelled call sends no answer but its work goes on. */
const runningCalls = new WeakMap<McpServer, Set<Promise<unknown>>>();

/** Resolves once every tool call this server started has finished (answered or not). */
export async function toolCallsSettled(server: McpServer): Promise<void> {
  const running = runningCalls.get(server);
  while (running?.size) await Promise.allSettled([...running]);
}

/** An MCP server exposing pyro's tools; the server only registers, each tool module does the work. */
export function createPyroMcpServer(options: ServerOptions): McpServer {
  const server = new McpServer(
    { name: "pyro", version: version() },
    { instructions: "pyro runs commands in isolated Linux microVMs. Create a workspace, run commands and edit files in it, review with workspace_diff, then delete it." },
  );
  const running = new Set<Promise<unknown>>();
  runningCalls.set(server, running);
  for (const tool of toolDefinitions(options.profile, options.mode)) {
    // Strict: an argument the tool does not know (a misspelt option) is refused, never silently dropped.
    server.registerTool(tool.name, { title: tool.title, description: tool.description, inputSchema: z.strictObject(tool.inputSchema) }, async (args: Record<string, unknown>, extra) => {
      const token = extra._meta?.progressToken;
      const progress = async (value: number, message: string) => {
        if (token === undefined) return;
        await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: value, message } }).catch(() => undefined);
      };
      const call = Promise.resolve().then(() => tool.run(args, { pyro: options.pyro, progress }));
      running.add(call);
      try {
        const result = await call;
        return { content: [{ type: "text" as const, text: JSON.stringify(result, null, 2) }] };
      } catch (error) {
        return toolErrorResult(error);
      } finally {
        running.delete(call);
      }
    });
  }
  return server;
}
