import { type Command, InvalidArgumentError, Option } from "commander";
import type { Pyro } from "../../sdk/pyro.js";
import { isPyroError } from "../../errors.js";
import { chooseReadiness } from "../../workspaces/service-readiness.js";
import {
  FILE_READ_DEFAULT_MAX_BYTES,
  FILE_READ_MAX_BYTES,
  SERVICE_DEFAULTS,
  SHELL_READ_DEFAULTS,
  SHELL_SIGNALS,
  type ShellSignal,
} from "../../workspaces/workspace-limits.js";
import { emit, printJson, summaryLine as line } from "../output.js";
import { collect, integerOption, portNumber, secondsUpTo } from "../parse-options.js";

type PyroFactory = () => Promise<Pyro>;

function publishOption(value: string, previous: { hostPort: number; guestPort: number }[] = []) {
  const m = /^(\d+):(\d+)$/.exec(value) ?? /^()(\d+)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`expected HOST_PORT:GUEST_PORT (or GUEST_PORT), got '${value}'`);
  return [...previous, { hostPort: m[1] ? portNumber(m[1], { allowZero: true }) : 0, guestPort: portNumber(m[2]!, { allowZero: false }) }];
}

/** --ready-tcp PORT or HOST:PORT (inside the guest). */
function readyTcpOption(value: string): { host?: string; port: number } {
  const m = /^(?:(.+):)?([^:]+)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`expected PORT or HOST:PORT, got '${value}'`);
  return { ...(m[1] ? { host: m[1].replace(/^\[|\]$/g, "") } : {}), port: portNumber(m[2]!, { allowZero: false }) };
}

/** shell, service and disk subcommands of `pyro workspace` (the workspace-full surface). */
export function registerWorkspaceFullCommands(ws: Command, pyro: PyroFactory): void {
  const shell = ws.command("shell").description("Interactive PTY shells inside a workspace.");
  shell
    .command("open")
    .argument("<workspace>", "id or name")
    .option("--cwd <path>", "directory relative to /workspace")
    .option("--cols <n>", "terminal width", integerOption(10, 1000))
    .option("--rows <n>", "terminal height", integerOption(5, 1000))
    .option("--secret-env <SECRET[=ENV]>", "expose a secret as an environment variable (repeatable)", collect)
    .addOption(new Option("--id-only", "print only the shell id").conflicts("json"))
    .option("--json", "print JSON")
    .action(async (ref: string, o: { cwd?: string; cols?: number; rows?: number; secretEnv?: string[]; idOnly?: boolean; json?: boolean }) => {
      const r = await (await pyro()).openShell(ref, {
        ...(o.cwd ? { cwd: o.cwd } : {}),
        ...(o.cols ? { cols: o.cols } : {}),
        ...(o.rows ? { rows: o.rows } : {}),
        ...(o.secretEnv ? { secretEnv: o.secretEnv } : {}),
      });
      if (o.idOnly) return void process.stdout.write(`${r.shell_id}\n`);
      emit(o.json, r, () =>
        line("workspace-shell-open", {
          workspace_id: r.workspace_id,
          shell_id: r.shell_id,
          state: r.running ? "running" : "exited",
          cols: r.cols,
          rows: r.rows,
        }),
      );
    });
  shell
    .command("read")
    .argument("<workspace>", "id or name")
    .argument("<shell>", "shell id")
    .option("--cursor <n>", "start at this output offset (from a previous next_cursor)", integerOption(0, Number.MAX_SAFE_INTEGER))
    .option("--max-chars <n>", "return at most this much output", integerOption(1, SHELL_READ_DEFAULTS.maxCharsLimit))
    .option("--plain", "render escape sequences like a terminal would (plain text)")
    .option("--wait-for-idle-ms <n>", "first wait until the shell is quiet this long", integerOption(1, SHELL_READ_DEFAULTS.waitForIdleMaxMs))
    .option("--json", "print JSON")
    .action(async (ref: string, id: string, o: { cursor?: number; maxChars?: number; plain?: boolean; waitForIdleMs?: number; json?: boolean }) => {
      const r = await (await pyro()).readShell(ref, id, {
        ...(o.cursor !== undefined ? { cursor: o.cursor } : {}),
        ...(o.maxChars ? { maxChars: o.maxChars } : {}),
        plain: Boolean(o.plain),
        ...(o.waitForIdleMs ? { waitForIdleMs: o.waitForIdleMs } : {}),
      });
      if (o.json) return printJson(r);
      process.stdout.write(r.output + (r.output.endsWith("\n") || !r.output ? "" : "\n"));
      process.stderr.write(line("workspace-shell-read", { shell_id: r.shell_id, next_cursor: r.next_cursor, more: r.more || undefined, running: r.running }));
    });
  shell
    .command("write")
    .argument("<workspace>", "id or name")
    .argument("<shell>", "shell id")
    .requiredOption("--input <text>", "text to type")
    .option("--no-newline", "do not press Enter after the input")
    .option("--json", "print JSON")
    .action(async (ref: string, id: string, o: { input: string; newline: boolean; json?: boolean }) => {
      const r = await (await pyro()).writeShell(ref, id, o.input, { newline: o.newline });
      emit(o.json, r, () => line("workspace-shell-write", r));
    });
  shell
    .command("signal")
    .argument("<workspace>", "id or name")
    .argument("<shell>", "shell id")
    .addOption(new Option("--signal <signal>", "signal for the foreground job").choices(SHELL_SIGNALS).default("INT"))
    .option("--json", "print JSON")
    .action(async (ref: string, id: string, o: { signal: ShellSignal; json?: boolean }) => {
      const r = await (await pyro()).signalShell(ref, id, o.signal);
      emit(o.json, r, () => line("workspace-shell-signal", r));
    });
  shell
    .command("close")
    .argument("<workspace>", "id or name")
    .argument("<shell>", "shell id")
    .option("--json", "print JSON")
    .action(async (ref: string, id: string, o: { json?: boolean }) => {
      const r = await (await pyro()).closeShell(ref, id);
      emit(o.json, r, () => line("workspace-shell-close", { shell_id: r.shell_id, exit_code: r.exit_code }));
    });

  const service = ws.command("service").description("Long-running services with readiness checks.");
  service
    .command("start")
    .argument("<workspace>", "id or name")
    .argument("<name>", "service name")
    .argument("<command...>", "command, after --")
    .option("--cwd <path>", "directory relative to /workspace")
    .option("--ready-file <path>", "ready once this file exists (relative to /workspace)")
    .option("--ready-tcp <host:port>", "ready once this TCP port accepts connections", readyTcpOption)
    .option("--ready-http <url>", "ready once this http:// URL answers 2xx/3xx")
    .option("--ready-command <command>", "ready once this command exits 0")
    .option(
      "--ready-timeout-seconds <s>",
      `give up (and stop the service) after this long (default ${SERVICE_DEFAULTS.readyTimeoutSeconds})`,
      secondsUpTo(SERVICE_DEFAULTS.readyTimeoutMaxSeconds),
    )
    .option("--ready-interval-ms <n>", `time between probes (default ${SERVICE_DEFAULTS.readyIntervalMs})`, integerOption(10, 60_000))
    .option("--publish <hostPort:guestPort>", "publish a guest port on 127.0.0.1 (repeatable; needs network policy egress+published-ports)", publishOption)
    .option("--secret-env <SECRET[=ENV]>", "expose a secret as an environment variable (repeatable)", collect)
    .option("--json", "print JSON")
    .action(async (ref: string, name: string, command: string[], o: Record<string, unknown> & { json?: boolean }) => {
      let readiness: ReturnType<typeof chooseReadiness>;
      try {
        readiness = chooseReadiness(
          {
            file: o.readyFile as string | undefined,
            tcp: o.readyTcp as { host?: string; port: number } | undefined,
            http: o.readyHttp as string | undefined,
            command: o.readyCommand as string | undefined,
            timeoutSeconds: o.readyTimeoutSeconds as number | undefined,
            intervalMs: o.readyIntervalMs as number | undefined,
          },
          {
            file: "--ready-file",
            tcp: "--ready-tcp",
            http: "--ready-http",
            command: "--ready-command",
            timeoutSeconds: "--ready-timeout-seconds",
            intervalMs: "--ready-interval-ms",
          },
        );
      } catch (error) {
        // A usage mistake: one line and exit 2, like commander's own option errors.
        throw isPyroError(error) ? new InvalidArgumentError(error.message) : error;
      }
      const r = await (await pyro()).startService(ref, name, command, {
        ...(o.cwd ? { cwd: String(o.cwd) } : {}),
        ...readiness,
        ...(o.publish ? { publish: o.publish as { hostPort: number; guestPort: number }[] } : {}),
        ...(o.secretEnv ? { secretEnv: o.secretEnv as string[] } : {}),
      });
      emit(o.json, r, () =>
        line("workspace-service-start", {
          workspace_id: r.workspace_id,
          name: r.name,
          state: r.state,
          pid: r.pid,
          ready_ms: r.ready_ms,
          published: r.published.map((p) => p.url).join(","),
        }),
      );
    });
  service
    .command("list")
    .argument("<workspace>", "id or name")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { json?: boolean }) => {
      const r = await (await pyro()).listServices(ref);
      emit(
        o.json,
        r,
        () =>
          r.services
            .map((s) =>
              line("service", { name: s.name, state: s.state, pid: s.pid, exit_code: s.exit_code, published: s.published.map((p) => p.url).join(",") }),
            )
            .join("") || "no services\n",
      );
    });
  service
    .command("status")
    .argument("<workspace>", "id or name")
    .argument("<name>", "service name")
    .option("--json", "print JSON")
    .action(async (ref: string, name: string, o: { json?: boolean }) => {
      const r = await (await pyro()).statusService(ref, name);
      emit(o.json, r, () => line("workspace-service-status", { name: r.name, state: r.state, pid: r.pid, exit_code: r.exit_code }));
    });
  service
    .command("logs")
    .argument("<workspace>", "id or name")
    .argument("<name>", "service name")
    .option("--tail-lines <n>", `last N lines of each stream (default ${SERVICE_DEFAULTS.tailLines})`, integerOption(1, 1_000_000))
    .option("--all", "everything")
    .option("--json", "print JSON")
    .action(async (ref: string, name: string, o: { tailLines?: number; all?: boolean; json?: boolean }) => {
      const r = await (await pyro()).logsService(ref, name, { ...(o.tailLines ? { tailLines: o.tailLines } : {}), all: Boolean(o.all) });
      if (o.json) return printJson(r);
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
    });
  service
    .command("stop")
    .argument("<workspace>", "id or name")
    .argument("<name>", "service name")
    .option("--json", "print JSON")
    .action(async (ref: string, name: string, o: { json?: boolean }) => {
      const r = await (await pyro()).stopService(ref, name);
      emit(o.json, r, () => line("workspace-service-stop", { name: r.name, state: r.state, exit_code: r.exit_code }));
    });

  const disk = ws.command("disk").description("Inspect a stopped workspace's disk without booting it or mounting it.");
  disk
    .command("list")
    .argument("<workspace>", "id or name")
    .argument("[path]", "directory relative to /workspace", ".")
    .option("--recursive", "descend into subdirectories")
    .option("--json", "print JSON")
    .action(async (ref: string, path: string, o: { recursive?: boolean; json?: boolean }) => {
      const r = await (await pyro()).listWorkspaceDisk(ref, path, { recursive: Boolean(o.recursive) });
      emit(o.json, r, () =>
        r.entries
          .map((e) => `${e.type === "directory" ? "d" : e.type === "symlink" ? "l" : "-"} ${e.mode} ${String(e.size).padStart(10)} ${e.path}\n`)
          .join(""),
      );
    });
  disk
    .command("read")
    .argument("<workspace>", "id or name")
    .argument("<path>", "file relative to /workspace")
    .option("--max-bytes <n>", `read at most this many bytes (default ${FILE_READ_DEFAULT_MAX_BYTES})`, integerOption(1, FILE_READ_MAX_BYTES))
    .option("--json", "print JSON")
    .action(async (ref: string, path: string, o: { maxBytes?: number; json?: boolean }) => {
      const r = await (await pyro()).readWorkspaceDisk(ref, path, o.maxBytes ? { maxBytes: o.maxBytes } : {});
      if (o.json) return printJson(r);
      process.stdout.write(r.encoding === "utf8" ? r.content : Buffer.from(r.content, "base64"));
    });
  disk
    .command("export")
    .argument("<workspace>", "id or name")
    .requiredOption("--output <hostPath>", "raw ext4 image to create")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { output: string; json?: boolean }) => {
      const r = await (await pyro()).exportWorkspaceDisk(ref, o.output);
      emit(o.json, r, () => line("workspace-disk-export", r));
    });
}
