import type { z } from "zod";
import type { Pyro } from "../sdk/pyro.js";

/** What a profile or mode exposes beyond the core: it shapes schemas as well as the tool list. */
export interface Surface {
  /** Named snapshots (reset to a snapshot, snapshot_* tools). */
  snapshots: boolean;
  /** vCPU / memory / TTL choices at create. */
  machineShape: boolean;
  /** Secrets at create and secret_env on exec; network policy at create. */
  secretsAndNetwork: boolean;
}

export interface ToolRuntime {
  pyro: Pyro;
  /** Reports progress to a client that asked for it (no-op otherwise). */
  progress: (progress: number, message: string) => Promise<void>;
}

/** One MCP tool: its schema, a description written for a model, and a handler over the SDK. */
export interface ToolDefinition {
  name: string;
  title: string;
  description: string;
  inputSchema: z.ZodRawShape;
  run: (args: Record<string, unknown>, rt: ToolRuntime) => Promise<unknown>;
}

export type ToolFactory = (surface: Surface) => ToolDefinition;
