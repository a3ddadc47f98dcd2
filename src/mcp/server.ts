import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { z } from "zod";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../paths.js";
import type { Pyro } from "../sdk/pyro.js";
import { resolveToolSet, type ModeName, type ProfileName } from "./profiles.js";
import { catalogTool, type CatalogTool } from "./catalog.js";
import type { Surface, ToolAnnotations, ToolRuntime } from "./tool-definition.js";
import { toolErrorResult } from "./tool-errors.js";

export interface ServerOptions {
  pyro: Pyro;
  profile?: ProfileName;
  mode?: ModeName;
}

/** A catalogue tool as one profile or mode serves it: wording and arguments for that surface. */
export interface ServedTool {
  name: string;
  title: string;
  description: string;
  annotations: ToolAnnotations;
  outputSchema?: z.ZodObject;
  /** Strict: an argument the tool does not know is refused, naming the ones it accepts. */
  inputSchema: z.ZodObject;
  run: (args: Record<string, unknown>, rt: ToolRuntime) => Promise<unknown>;
}

/** The arguments a tool takes on this surface: gated ones only where their part of the surface is on. */
export function servedArguments(tool: CatalogTool, surface: Surface): z.ZodRawShape {
  const gated: Partial<Record<keyof Surface, readonly string[]>> = tool.gated ?? {};
  const hidden = new Set((Object.keys(gated) as (keyof Surface)[]).filter((part) => !surface[part]).flatMap((part) => gated[part] ?? []));
  return Object.fromEntries(Object.entries(tool.input as z.ZodRawShape).filter(([key]) => !hidden.has(key)));
}

function strictInput(name: string, shape: z.ZodRawShape): z.ZodObject {
  const accepted = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === "unrecognized_keys"
        ? `Unrecognized key${issue.keys.length === 1 ? "" : "s"}: ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}; ${name} accepts ${accepted.length ? accepted.join(", ") : "no arguments"}`
        : undefined,
  });
}

/** The tools a profile/mode serves, descriptions included (also used by benchmarks). */
export function servedTools(profile?: ProfileName, mode?: ModeName): ServedTool[] {
  const set = resolveToolSet(profile, mode);
  return set.tools.map((name) => {
    const tool = catalogTool(name);
    return {
      name: tool.name,
      title: tool.title,
      description: set.descriptions?.[name] ?? tool.describe?.(set.surface) ?? tool.description,
      annotations: tool.annotations,
      ...("output" in tool && tool.output ? { outputSchema: tool.output } : {}),
      inputSchema: strictInput(tool.name, servedArguments(tool, set.surface)),
      // The schema checked the arguments before this runs (the MCP SDK validates against inputSchema).
      run: (args, rt) => (tool.run as (args: Record<string, unknown>, rt: ToolRuntime) => Promise<unknown>)(args, rt),
    };
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
    {
      instructions:
        "pyro runs commands in isolated Linux microVMs. Create a workspace, run commands and edit files in it, review with workspace_diff, then delete it.",
    },
  );
  const running = new Set<Promise<unknown>>();
  runningCalls.set(server, running);
  for (const tool of servedTools(options.profile, options.mode)) {
    server.registerTool(
      tool.name,
      {
        title: tool.title,
        description: tool.description,
        inputSchema: tool.inputSchema,
        annotations: tool.annotations,
        ...(tool.outputSchema ? { outputSchema: tool.outputSchema } : {}),
      },
      async (args: Record<string, unknown>, extra) => {
        const token = extra._meta?.progressToken;
        const progress = async (value: number, message: string) => {
          if (token === undefined) return;
          await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: value, message } }).catch(() => undefined);
        };
        const call = Promise.resolve().then(() => tool.run(args, { pyro: options.pyro, progress }));
        running.add(call);
        try {
          const result = await call;
          // Text for every client, and the same result as structuredContent for clients that read it.
          const structured =
            result !== null && typeof result === "object" && !Array.isArray(result) ? { structuredContent: result as Record<string, unknown> } : {};
          return { content: [{ type: "text" as const, text: JSON.stringify(result, null, 2) }], ...structured };
        } catch (error) {
          return toolErrorResult(error);
        } finally {
          running.delete(call);
        }
      },
    );
  }
  return server;
}
