import { WORKSPACE_EXEC_DEFAULTS } from "./workspace-limits.js";
import { checkCommandTimeout } from "../runtime/guest-limits.js";
import { appendFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import { checkExecRequest } from "../guest-protocol/agent-client.js";
import type { GuestExecResult } from "../guest-protocol/messages.js";
import { workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { nowIso, withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { CommandLogEntry } from "./workspace-record.js";
import { networkEnvironment } from "./workspace-network.js";
import { secretEnvironment } from "./workspace-secrets.js";
import { scopedSecretAudit } from "./scoped-secrets.js";

export { WORKSPACE_EXEC_DEFAULTS };
/** How much of each stream the command log keeps (the full output is in the exec result). */
const LOG_OUTPUT_CHARS = 4096;
/** How far a workspace's last activity may lag behind the end of a command (see execInWorkspace). */
const ACTIVITY_RESOLUTION_MS = 1_000;

export interface WorkspaceExecOptions {
  cwd?: string;
  timeoutSeconds?: number;
  env?: Record<string, string>;
  stdin?: string | Buffer;
  maxOutputBytes?: number;
  /** Secrets to expose as environment variables: "NAME" or "NAME=ENV_VAR". */
  secretEnv?: string[];
}

export interface WorkspaceExecResult {
  workspace_id: string;
  sequence: number;
  command: string[] | string;
  cwd: string;
  exit_code: number;
  stdout: string;
  stderr: string;
  duration_ms: number;
  timed_out: boolean;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  execution_mode: "guest";
}

function commandsFile(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "commands.jsonl");
}

function tail(text: string): string {
  return text.length > LOG_OUTPUT_CHARS ? `[... ${text.length - LOG_OUTPUT_CHARS} chars omitted ...]${text.slice(-LOG_OUTPUT_CHARS)}` : text;
}

/** The command log's entry for a result; its output must already be redacted (the tail cuts it). */
export function commandLogEntry(result: WorkspaceExecResult, startedAt: string): CommandLogEntry {
  return {
    sequence: result.sequence,
    command: result.command,
    cwd: result.cwd,
    started_at: startedAt,
    exit_code: result.exit_code,
    duration_ms: result.duration_ms,
    timed_out: result.timed_out,
    stdout: tail(result.stdout),
    stderr: tail(result.stderr),
    stdout_truncated: result.stdout_truncated || result.stdout.length > LOG_OUTPUT_CHARS,
    stderr_truncated: result.stderr_truncated || result.stderr.length > LOG_OUTPUT_CHARS,
  };
}

/** Runs a command in the workspace (default cwd /workspace) and records it in the command log. */
export async function execInWorkspace(
  ctx: WorkspaceContext,
  ref: string,
  command: string[] | string,
  options: WorkspaceExecOptions = {},
): Promise<WorkspaceExecResult> {
  if ((Array.isArray(command) && (command.length === 0 || !command[0])) || command === "") {
    throw new PyroError("INVALID_ARGUMENT", "no command given; usage: pyro workspace exec WORKSPACE -- COMMAND [ARGS...]");
  }
  const timeoutSeconds = options.timeoutSeconds ?? WORKSPACE_EXEC_DEFAULTS.timeoutSeconds;
  checkCommandTimeout(timeoutSeconds);
  const cwd = workspacePath(options.cwd ?? WORKSPACE_ROOT);
  checkExecRequest({ command, cwd, ...(options.env ? { env: options.env } : {}), ...(options.stdin !== undefined ? { stdin: options.stdin } : {}) });
  return withRunningWorkspace(
    ctx,
    ref,
    async (record, vm, session) => {
      const startedAt = nowIso();
      const started = performance.now();
      const before = { command_count: record.command_count, last_activity_at: record.last_activity_at, updated_at: record.updated_at };
      const sequence = record.command_count + 1;
      // The record counts the command as it starts, written while the guest runs it: the write's
      // fsync (~1.5 ms) is then off every command's round trip. When no result comes back (the
      // guest refused it, the VM died, the host timed out), the count is taken back, as it was
      // never made before; a kill -9 of pyro meanwhile leaves it counted without a log line.
      record.command_count = sequence;
      record.last_activity_at = record.updated_at = startedAt;
      const counted = ctx.store.write(record);
      // Awaited below, once the guest answers: a failed write must not go unhandled until then.
      counted.catch(() => undefined);
      let r: GuestExecResult;
      try {
        r = await vm.agent.exec({
          command,
          cwd,
          env: { ...networkEnvironment(record), ...options.env, ...secretEnvironment(session.secrets, options.secretEnv) },
          timeoutMs: Math.round(timeoutSeconds * 1000),
          maxOutputBytes: options.maxOutputBytes ?? WORKSPACE_EXEC_DEFAULTS.maxOutputBytes,
          ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
          // What the command wrote survives a killed VMM: the agent flushes before it answers, one
          // round trip instead of the exec's and a sync's.
          syncAfter: true,
        });
      } catch (error) {
        await counted.catch(() => undefined);
        Object.assign(record, before);
        await ctx.store.write(record).catch(() => undefined);
        throw error;
      }
      await counted;
      const result: WorkspaceExecResult = {
        workspace_id: record.id,
        sequence,
        command,
        cwd,
        exit_code: r.exitCode,
        // Redacted as bytes before anything cuts or decodes them (the agent's cap already did cut).
        stdout: session.redactor.capturedText(r.stdout),
        stderr: session.redactor.capturedText(r.stderr),
        duration_ms: r.durationMs,
        timed_out: r.timedOut,
        stdout_truncated: r.stdout.totalBytes > r.stdout.bytes.length,
        stderr_truncated: r.stderr.totalBytes > r.stderr.bytes.length,
        execution_mode: "guest",
      };
      // In line: one small append, where the thread pool's round trips cost more.
      appendFileSync(commandsFile(ctx, record.id), JSON.stringify(session.redactor.deep(commandLogEntry(result, startedAt))) + "\n", { mode: 0o600 });
      // The TTL counts from the last activity: a command that ran long moves it to its end.
      if (performance.now() - started > ACTIVITY_RESOLUTION_MS) {
        record.last_activity_at = record.updated_at = nowIso();
        await ctx.store.write(record);
      }
      return result;
    },
    "exec",
  );
}

/** The command history, oldest first. A torn last line (crash mid-append) is skipped, not fatal. */
export async function workspaceLogs(
  ctx: WorkspaceContext,
  ref: string,
  options: { limit?: number } = {},
): Promise<{ workspace_id: string; count: number; commands: CommandLogEntry[]; secrets?: ReturnType<typeof scopedSecretAudit> }> {
  const record = await ctx.store.resolve(ref);
  const text = await readFile(commandsFile(ctx, record.id), "utf8").catch(() => "");
  const commands: CommandLogEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const parsed = CommandLogEntry.safeParse(JSON.parse(line));
      if (parsed.success) commands.push(parsed.data);
    } catch {
      // torn line
    }
  }
  const limited = options.limit ? commands.slice(-options.limit) : commands;
  // Where each scoped secret was sent and how often it was refused (names, hosts, counts only).
  const secrets = record.scoped_secrets.length ? { secrets: scopedSecretAudit(record, ctx.store.dir(record.id)) } : {};
  return { workspace_id: record.id, count: limited.length, commands: limited, ...secrets };
}
