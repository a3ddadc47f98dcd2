import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { PyroError } from "../errors.js";
import { writeFileAtomic } from "../storage/atomic-file.js";
import type { ServeCommand } from "./serve-command.js";

export const SERVER_NAME = "pyro";

/** One chat host's MCP config file: where it lives and how pyro's entry is read and written. */
export interface HostConfigFormat {
  host: "claude-code" | "codex" | "opencode";
  path(env: NodeJS.ProcessEnv): string;
  /** The entry as the host would store it, for printing. */
  render(cmd: ServeCommand): string;
  /** pyro's current entry, normalised to a command line, or undefined. */
  read(text: string): ServeCommand | undefined;
  /** The whole file with pyro's entry set; everything else is kept as it was. */
  upsert(text: string, cmd: ServeCommand): string;
}

function home(env: NodeJS.ProcessEnv): string {
  return env.HOME || homedir();
}

function parseJsonConfig(text: string, path: string): Record<string, unknown> {
  if (!text.trim()) return {};
  try {
    const value = JSON.parse(text) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new PyroError("INVALID_ARGUMENT", `${path} is not a JSON object; fix or move it, pyro will not overwrite it`);
}

const claudeCode: HostConfigFormat = {
  host: "claude-code",
  path: (env) => join(home(env), ".claude.json"),
  render: (cmd) => JSON.stringify({ mcpServers: { [SERVER_NAME]: { type: "stdio", command: cmd.command, args: cmd.args, env: {} } } }, null, 2),
  read(text) {
    const entry = (parseJsonConfig(text, "~/.claude.json").mcpServers as Record<string, { command?: string; args?: string[] }> | undefined)?.[SERVER_NAME];
    return entry?.command ? { command: entry.command, args: entry.args ?? [] } : undefined;
  },
  upsert(text, cmd) {
    const config = parseJsonConfig(text, "~/.claude.json");
    const servers = { ...(config.mcpServers as Record<string, unknown> | undefined) };
    servers[SERVER_NAME] = { type: "stdio", command: cmd.command, args: cmd.args, env: {} };
    return JSON.stringify({ ...config, mcpServers: servers }, null, 2) + "\n";
  },
};

const opencode: HostConfigFormat = {
  host: "opencode",
  path: (env) => join(env.XDG_CONFIG_HOME || join(home(env), ".config"), "opencode", "opencode.json"),
  render: (cmd) =>
    JSON.stringify(
      { $schema: "https://opencode.ai/config.json", mcp: { [SERVER_NAME]: { type: "local", command: [cmd.command, ...cmd.args], enabled: true } } },
      null,
      2,
    ),
  read(text) {
    const entry = (parseJsonConfig(text, "opencode.json").mcp as Record<string, { command?: string[] }> | undefined)?.[SERVER_NAME];
    return entry?.command?.length ? { command: entry.command[0]!, args: entry.command.slice(1) } : undefined;
  },
  upsert(text, cmd) {
    const config = parseJsonConfig(text, "opencode.json");
    const servers = { ...(config.mcp as Record<string, unknown> | undefined) };
    servers[SERVER_NAME] = { type: "local", command: [cmd.command, ...cmd.args], enabled: true };
    return JSON.stringify({ $schema: "https://opencode.ai/config.json", ...config, mcp: servers }, null, 2) + "\n";
  },
};

const tomlString = (s: string) => JSON.stringify(s); // TOML basic strings share JSON's escapes

function codexTable(cmd: ServeCommand): string {
  return `[mcp_servers.${SERVER_NAME}]\ncommand = ${tomlString(cmd.command)}\nargs = [${cmd.args.map(tomlString).join(", ")}]\n`;
}

function parseCodex(text: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (error) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `~/.codex/config.toml does not parse (${(error as Error).message.split("\n")[0]}); fix it first, pyro will not overwrite it`,
    );
  }
}

const codex: HostConfigFormat = {
  host: "codex",
  path: (env) => join(env.CODEX_HOME || join(home(env), ".codex"), "config.toml"),
  render: codexTable,
  read(text) {
    const entry = (parseCodex(text).mcp_servers as Record<string, { command?: string; args?: string[] }> | undefined)?.[SERVER_NAME];
    return entry?.command ? { command: entry.command, args: entry.args ?? [] } : undefined;
  },
  // Edited as text, not re-serialised: the user's comments, ordering and other servers stay intact.
  upsert(text, cmd) {
    parseCodex(text);
    const lines = text.split("\n");
    const kept: string[] = [];
    let inPyro = false;
    for (const line of lines) {
      const header = /^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$/.exec(line)?.[1];
      if (header !== undefined) inPyro = header === `mcp_servers.${SERVER_NAME}` || header.startsWith(`mcp_servers.${SERVER_NAME}.`);
      if (!inPyro) kept.push(line);
    }
    const body = kept.join("\n").replace(/\n*$/, "");
    const result = `${body ? `${body}\n\n` : ""}${codexTable(cmd)}`;
    parseCodex(result);
    return result;
  },
};

export const HOST_FORMATS: Record<HostConfigFormat["host"], HostConfigFormat> = { "claude-code": claudeCode, codex, opencode };
export type HostName = keyof typeof HOST_FORMATS;

export function hostFormat(name: string): HostConfigFormat {
  const format = (HOST_FORMATS as Record<string, HostConfigFormat>)[name];
  if (!format) throw new PyroError("INVALID_ARGUMENT", `unknown host '${name}'; choose claude-code, codex or opencode`);
  return format;
}

export async function readConfigText(path: string): Promise<string> {
  return readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return "";
    throw error;
  });
}

export async function writeConfig(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, text, 0o600);
}
