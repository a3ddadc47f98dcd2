import { access, constants } from "node:fs/promises";
import { isDeepStrictEqual } from "node:util";
import type { ModeName } from "../mcp/profiles.js";
import { findExecutable } from "../process/host-command.js";
import { hostFormat, HOST_FORMATS, readConfigText, writeConfig, type HostName } from "./host-configs.js";
import type { ProjectSource } from "../workspaces/project-seed.js";
import { projectOfArgs, serveCommand, type LaunchStyle, type ServeCommand } from "./serve-command.js";

export interface ConnectResult {
  host: string;
  path: string;
  status: "added" | "updated" | "unchanged";
  command: ServeCommand;
}

/** Writes (or refreshes) pyro's entry in a host's MCP config, leaving every other entry alone. */
export async function connectHost(
  host: string,
  options: { mode?: ModeName; style?: LaunchStyle; project?: ProjectSource; env?: NodeJS.ProcessEnv } = {},
): Promise<ConnectResult> {
  const format = hostFormat(host);
  const path = format.path(options.env ?? process.env);
  const text = await readConfigText(path);
  const command = serveCommand({
    ...(options.mode ? { mode: options.mode } : {}),
    ...(options.style ? { style: options.style } : {}),
    ...(options.project ? { project: options.project } : {}),
  });
  const current = format.read(text);
  if (isDeepStrictEqual(current, command)) return { host: format.host, path, status: "unchanged", command };
  await writeConfig(path, format.upsert(text, command));
  return { host: format.host, path, status: current ? "updated" : "added", command };
}

export function printConfig(
  host: string,
  options: { mode?: ModeName; style?: LaunchStyle; project?: ProjectSource } = {},
): { host: string; path: string; config: string } {
  const format = hostFormat(host);
  return { host: format.host, path: format.path(process.env), config: format.render(serveCommand(options)) };
}

export interface HostDoctorEntry {
  host: HostName;
  path: string;
  configured: boolean;
  /** Problems with pyro's entry, each with its fix. */
  problems: string[];
  command?: ServeCommand;
  /** The workflow mode the entry serves (null: the default profile), when configured. */
  mode?: ModeName | null;
}

/** The `--mode` an entry's arguments pass to `pyro mcp serve`, or null when it passes none. */
function entryMode(cmd: ServeCommand): ModeName | null {
  const at = cmd.args.indexOf("--mode");
  return at >= 0 ? ((cmd.args[at + 1] as ModeName | undefined) ?? null) : null;
}

async function runnable(cmd: ServeCommand): Promise<string | undefined> {
  const binary = cmd.command.includes("/") ? cmd.command : findExecutable(cmd.command);
  if (!binary) return `'${cmd.command}' is not on PATH`;
  try {
    await access(binary, constants.X_OK);
  } catch {
    return `${binary} does not exist or is not executable`;
  }
  const script = cmd.args.find((a) => a.endsWith("main.js"));
  if (script) {
    try {
      await access(script, constants.R_OK);
    } catch {
      return `${script} does not exist (rebuild with scripts/setup.sh)`;
    }
  }
  return undefined;
}

/**
 * Checks each host's config: is pyro there, is it the expected command, can it start, and (with
 * `expectedMode`) does it serve that workflow mode.
 */
export async function doctorHosts(env: NodeJS.ProcessEnv = process.env, expectedMode?: ModeName): Promise<HostDoctorEntry[]> {
  const entries: HostDoctorEntry[] = [];
  for (const format of Object.values(HOST_FORMATS)) {
    const path = format.path(env);
    const entry: HostDoctorEntry = { host: format.host, path, configured: false, problems: [] };
    try {
      const current = format.read(await readConfigText(path));
      if (current) {
        entry.configured = true;
        entry.command = current;
        entry.mode = entryMode(current);
        if (expectedMode && entry.mode !== expectedMode) {
          entry.problems.push(
            `the entry serves ${entry.mode ? `mode ${entry.mode}` : "the default profile"}, not mode ${expectedMode}; fix with: pyro host connect ${format.host} --mode ${expectedMode}`,
          );
        }
        const broken = await runnable(current);
        if (broken) entry.problems.push(`${broken}; fix with: pyro host repair ${format.host}`);
        if (!current.args.includes("mcp") || !current.args.includes("serve"))
          entry.problems.push(`the entry does not run 'pyro mcp serve'; fix with: pyro host repair ${format.host}`);
      }
    } catch (error) {
      entry.problems.push((error as Error).message);
    }
    entries.push(entry);
  }
  return entries;
}

/** Rewrites pyro's entry to the canonical command, keeping the mode and project flags the entry already had. */
export async function repairHost(host: string, env: NodeJS.ProcessEnv = process.env): Promise<ConnectResult> {
  const format = hostFormat(host);
  const current = format.read(await readConfigText(format.path(env)));
  const mode = current ? entryMode(current) : null;
  const project = current ? projectOfArgs(current.args) : undefined;
  return connectHost(host, { ...(mode ? { mode } : {}), ...(project ? { project } : {}), env });
}
