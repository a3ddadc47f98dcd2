import type { z } from "zod";
import type { ProfileName } from "./profile-names.js";
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

/** MCP's behaviour hints, all three stated for every tool so none is left to a client's default. */
export interface ToolAnnotations {
  readOnlyHint: boolean;
  destructiveHint: boolean;
  idempotentHint: boolean;
  openWorldHint?: boolean;
}

/** Reads only: changes nothing, safe to repeat. */
export const READ_ONLY: ToolAnnotations = { readOnlyHint: true, destructiveHint: false, idempotentHint: true };
/** Adds something new (a workspace, a snapshot, a host file) and never overwrites. */
export const ADDITIVE: ToolAnnotations = { readOnlyHint: false, destructiveHint: false, idempotentHint: false };
/** May overwrite or remove state; `idempotent` when the same call twice has no further effect. */
export function destructive(idempotent: boolean): ToolAnnotations {
  return { readOnlyHint: false, destructiveHint: true, idempotentHint: idempotent };
}

/**
 * One operation, declared once: the MCP tool, its place in the profiles, and (through the catalogue)
 * the README's tool table and the tests' expected lists all come from this.
 */
export interface ToolDefinition<Name extends string = string, Shape extends z.ZodRawShape = z.ZodRawShape, Result = unknown> {
  name: Name;
  title: string;
  /** Written for a model: what it does, when to use it, what to call next. */
  description: string;
  /** The smallest profile that serves it (profiles nest: vm-run ⊂ workspace-core ⊂ workspace-full). */
  profile: ProfileName;
  annotations: ToolAnnotations;
  /** Every argument it can take; descriptions, defaults and bounds come from the domain's constants. */
  input: Shape;
  /** Arguments offered only where the profile or mode has that part of the surface (absent elsewhere). */
  gated?: { [Part in keyof Surface]?: readonly (keyof Shape & string)[] };
  /** Other wording where the surface calls for it (e.g. reset to a snapshot where snapshots exist); undefined keeps `description`. */
  describe?: (surface: Surface) => string | undefined;
  /** The result's schema, served as outputSchema (the SDK then checks each structuredContent against it). */
  output?: z.ZodObject;
  /**
   * The handler over the SDK, typed by the schema. Gated arguments arrive only where their part of
   * the surface is on, so handlers treat them as possibly absent. (Method syntax: a catalogue of
   * tools with different schemas is one array.)
   */
  run(args: z.output<z.ZodObject<Shape>>, rt: ToolRuntime): Promise<Result>;
}

/** Declares a tool with its argument types inferred from its schema (no casts in handlers). */
export function defineTool<const Name extends string, Shape extends z.ZodRawShape, Result>(
  tool: ToolDefinition<Name, Shape, Result>,
): ToolDefinition<Name, Shape, Result> {
  return tool;
}
