import { type Command, InvalidArgumentError, Option } from "commander";
import type { Pyro } from "../../sdk/pyro.js";
import { readHostText } from "../host-input.js";
import { emit, printJson, summaryLine as line } from "../output.js";
import { collect, collectKeyValue, collectKeyValues, integerOption, secondsOption, secondsUpTo } from "../parse-options.js";
import { registerWorkspaceFullCommands } from "./workspace-full-commands.js";
import { COMMAND_TIMEOUT_MAX_SECONDS, DEFAULT_MACHINE_SHAPE, MACHINE_SHAPE_LIMITS } from "../../runtime/guest-limits.js";
import {
  DIFF_PAGE_LIMITS,
  FILE_READ_DEFAULT_MAX_BYTES,
  FORK_COUNT,
  FILE_READ_MAX_BYTES,
  NETWORK_POLICIES,
  WORKSPACE_DISK_GIB,
  WORKSPACE_EXEC_DEFAULTS,
} from "../../workspaces/workspace-limits.js";

type PyroFactory = () => Promise<Pyro>;

export function registerWorkspaceCommands(program: Command, pyro: PyroFactory, setExitCode: (code: number) => void): void {
  const ws = program.command("workspace").description("Persistent workspaces: a VM with a disk that outlives each command.");

  ws.command("create")
    .description("Create and start a workspace (seeded from a directory or archive, if given).")
    .argument("<environment>", "environment, e.g. debian:12")
    .option("--name <name>", "unique name, usable wherever an id is")
    .option("--label <key=value>", "label (repeatable)", collectKeyValue)
    .option("--seed-path <path>", "host directory or .tar/.tar.gz/.tgz to put in /workspace")
    .option(
      "--vcpu-count <n>",
      `virtual CPUs (default ${DEFAULT_MACHINE_SHAPE.vcpuCount})`,
      integerOption(MACHINE_SHAPE_LIMITS.vcpuCount.min, MACHINE_SHAPE_LIMITS.vcpuCount.max),
    )
    .option(
      "--mem-mib <n>",
      `memory in MiB (default ${DEFAULT_MACHINE_SHAPE.memMib})`,
      integerOption(MACHINE_SHAPE_LIMITS.memMib.min, MACHINE_SHAPE_LIMITS.memMib.max),
    )
    .option(
      "--disk-gib <n>",
      `size of the /workspace disk in GiB (default ${WORKSPACE_DISK_GIB.default}); the seed must fit`,
      integerOption(WORKSPACE_DISK_GIB.min, WORKSPACE_DISK_GIB.max),
    )
    .option("--ttl-seconds <s>", "delete after this long without activity", secondsOption)
    .option(
      "--secret <NAME=VALUE>",
      "a secret (repeatable); injected: the value in the guest's tmpfs, redacted from output; scoped with --secret-host: the guest gets a placeholder only",
      collectKeyValue,
    )
    .option("--secret-file <NAME=PATH>", "a secret read from a host file (repeatable)", collectKeyValue)
    .option(
      "--secret-host <NAME=HOST[,HOST...]>",
      "scope secret NAME to these hosts: $NAME in the guest is a placeholder that the egress proxy replaces with the value in requests to them only, refusing it anywhere else (repeatable; needs egress)",
      collectKeyValues,
    )
    .option("--secret-memory-only", "keep scoped secrets' values in memory only (handed to the VM's egress proxy, never written; gone when the VM stops)")
    .option(
      "--secret-over-http",
      "also send scoped secrets' values in cleartext http:// requests to their hosts (by default only over https: plain http exposes them to the network)",
    )
    .option("--inspect-tls", "terminate guest HTTPS at the egress proxy with a workspace CA even without scoped secrets")
    .addOption(
      new Option("--network-policy <policy>", "off: no network; egress: outbound HTTP(S) through pyro's proxy; egress+published-ports: also --publish")
        .choices(NETWORK_POLICIES)
        .default("off"),
    )
    .option("--allow-host <host|cidr>", "egress allowlist entry (repeatable), e.g. pypi.org, *.npmjs.org, 203.0.113.0/24", collect)
    .addOption(new Option("--id-only", "print only the workspace id").conflicts("json"))
    .option("--json", "print JSON")
    .action(
      async (
        environment: string,
        o: {
          name?: string;
          label?: Record<string, string>;
          seedPath?: string;
          vcpuCount?: number;
          memMib?: number;
          diskGib?: number;
          ttlSeconds?: number;
          secret?: Record<string, string>;
          secretFile?: Record<string, string>;
          secretHost?: Record<string, string[]>;
          secretMemoryOnly?: boolean;
          secretOverHttp?: boolean;
          inspectTls?: boolean;
          networkPolicy: string;
          allowHost?: string[];
          idOnly?: boolean;
          json?: boolean;
        },
      ) => {
        const r = await (await pyro()).createWorkspace(environment, {
          ...(o.name !== undefined ? { name: o.name } : {}),
          ...(o.label ? { labels: o.label } : {}),
          ...(o.seedPath ? { seedPath: o.seedPath } : {}),
          ...(o.vcpuCount ? { vcpuCount: o.vcpuCount } : {}),
          ...(o.memMib ? { memMib: o.memMib } : {}),
          ...(o.diskGib ? { diskGib: o.diskGib } : {}),
          ...(o.ttlSeconds ? { ttlSeconds: o.ttlSeconds } : {}),
          ...(o.secret ? { secrets: o.secret } : {}),
          ...(o.secretFile ? { secretFiles: o.secretFile } : {}),
          ...(o.secretHost ? { secretHosts: o.secretHost } : {}),
          ...(o.secretMemoryOnly ? { secretMemoryOnly: true } : {}),
          ...(o.secretOverHttp ? { secretsOverHttp: true } : {}),
          ...(o.inspectTls ? { tlsInterception: true } : {}),
          networkPolicy: o.networkPolicy,
          ...(o.allowHost ? { allowHosts: o.allowHost } : {}),
        });
        if (o.idOnly) return void process.stdout.write(`${r.workspace_id}\n`);
        emit(o.json, r, () =>
          line("workspace-create", {
            workspace_id: r.workspace_id,
            name: r.name,
            environment: r.environment,
            state: r.state,
            start_mode: r.vm?.start_mode,
            seed: r.workspace_seed.origin_kind,
            seed_files: r.workspace_seed.files,
            seed_skipped: r.workspace_seed.skipped_count || undefined,
            create_ms: r.create_ms,
          }),
        );
      },
    );

  ws.command("list")
    .description("List workspaces, most recently active first.")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }) => {
      const r = await (await pyro()).listWorkspaces();
      emit(o.json, r, () =>
        r.workspaces.length
          ? r.workspaces
              .map((w) =>
                line("workspace", {
                  workspace_id: w.workspace_id,
                  name: w.name,
                  state: w.state,
                  environment: w.environment,
                  last_activity_at: w.last_activity_at,
                  labels: Object.keys(w.labels).length ? w.labels : undefined,
                }),
              )
              .join("")
          : "no workspaces (create one with 'pyro workspace create debian:12')\n",
      );
    });

  ws.command("status")
    .description("Show one workspace.")
    .argument("<workspace>", "id or name")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { json?: boolean }) => {
      const w = await (await pyro()).statusWorkspace(ref);
      emit(o.json, w, () =>
        line("workspace-status", {
          workspace_id: w.workspace_id,
          name: w.name,
          state: w.state,
          environment: w.environment,
          commands: w.command_count,
          snapshots: w.snapshots.join(","),
          disk_used_bytes: w.disk_used_bytes,
          unexpected_stop: w.unexpected_stop,
          recovery: w.recovery,
        }),
      );
    });

  ws.command("update")
    .description("Rename a workspace or change its labels.")
    .argument("<workspace>", "id or name")
    .option("--name <name>", "new name")
    .option("--label <key=value>", "set a label (repeatable)", collectKeyValue)
    .option("--clear-label <key>", "remove a label (repeatable)", collect)
    .option("--json", "print JSON")
    .action(async (ref: string, o: { name?: string; label?: Record<string, string>; clearLabel?: string[]; json?: boolean }) => {
      const w = await (await pyro()).updateWorkspace(ref, {
        ...(o.name !== undefined ? { name: o.name } : {}),
        ...(o.label ? { labels: o.label } : {}),
        ...(o.clearLabel ? { clearLabels: o.clearLabel } : {}),
      });
      emit(o.json, w, () => line("workspace-update", { workspace_id: w.workspace_id, name: w.name, labels: w.labels }));
    });

  for (const [verb, description] of [
    ["stop", "Stop the VM (files are kept)."],
    ["start", "Start a stopped workspace from its disk."],
    ["delete", "Delete the workspace, its VM and all its files."],
  ] as const) {
    ws.command(verb)
      .description(description)
      .argument("<workspace>", "id or name")
      .option("--json", "print JSON")
      .action(async (ref: string, o: { json?: boolean }) => {
        const p = await pyro();
        const r = verb === "stop" ? await p.stopWorkspace(ref) : verb === "start" ? await p.startWorkspace(ref) : await p.deleteWorkspace(ref);
        emit(o.json, r, () => line(`workspace-${verb}`, { workspace_id: r.workspace_id, state: "state" in r ? r.state : "deleted" }));
      });
  }

  ws.command("summary")
    .description("What ran, what changed since the baseline, which snapshots exist.")
    .argument("<workspace>", "id or name")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { json?: boolean }) => {
      const s = await (await pyro()).summarizeWorkspace(ref);
      emit(o.json, s, () => {
        const out = [
          line("workspace-summary", {
            workspace_id: s.workspace.workspace_id,
            state: s.workspace.state,
            commands: s.commands.count,
            failed: s.commands.failed,
            snapshots: s.snapshots.join(","),
          }),
        ];
        if (s.changes)
          out.push(
            line("changes", { added: s.changes.added, modified: s.changes.modified, deleted: s.changes.deleted, binary: s.changes.binary }),
            ...s.changes.files.map((f) => `  ${f.status.padEnd(8)} ${f.path}\n`),
          );
        for (const c of s.commands.recent) out.push(`  #${c.sequence} exit=${c.exit_code} ${Array.isArray(c.command) ? c.command.join(" ") : c.command}\n`);
        return out.join("");
      });
    });

  ws.command("exec")
    .description("Run a command in the workspace (cwd /workspace); recorded in its log.")
    .argument("<workspace>", "id or name")
    .argument("<command...>", "command and arguments, after --")
    .option("--cwd <path>", "working directory, relative to /workspace")
    .option(
      "--timeout-seconds <s>",
      `kill the command after this long (default ${WORKSPACE_EXEC_DEFAULTS.timeoutSeconds})`,
      secondsUpTo(COMMAND_TIMEOUT_MAX_SECONDS),
    )
    .option("--secret-env <SECRET[=ENV]>", "expose a secret as an environment variable (repeatable)", collect)
    .option("--json", "print JSON")
    .action(async (ref: string, command: string[], o: { cwd?: string; timeoutSeconds?: number; secretEnv?: string[]; json?: boolean }) => {
      const r = await (await pyro()).execWorkspace(ref, command, {
        ...(o.cwd ? { cwd: o.cwd } : {}),
        ...(o.timeoutSeconds ? { timeoutSeconds: o.timeoutSeconds } : {}),
        ...(o.secretEnv ? { secretEnv: o.secretEnv } : {}),
      });
      if (o.json) printJson(r);
      else {
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        process.stderr.write(
          line("workspace-exec", {
            workspace_id: r.workspace_id,
            sequence: r.sequence,
            cwd: r.cwd,
            execution_mode: r.execution_mode,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            timed_out: r.timed_out || undefined,
          }),
        );
      }
      setExitCode(r.exit_code);
    });

  ws.command("logs")
    .description("Command history: argv, exit code, duration, output (truncated).")
    .argument("<workspace>", "id or name")
    .option("--limit <n>", "only the last N commands", integerOption(1, 1_000_000))
    .option("--json", "print JSON")
    .action(async (ref: string, o: { limit?: number; json?: boolean }) => {
      const r = await (await pyro()).logsWorkspace(ref, o.limit ? { limit: o.limit } : {});
      emit(
        o.json,
        r,
        () =>
          (r.commands
            .map(
              (c) =>
                `${line("command", { sequence: c.sequence, exit_code: c.exit_code, duration_ms: c.duration_ms, cwd: c.cwd, timed_out: c.timed_out || undefined })}$ ${Array.isArray(c.command) ? c.command.join(" ") : c.command}\n${c.stdout}${c.stderr}`,
            )
            .join("") || "no commands yet\n") +
          (r.secrets ?? [])
            .map((s) =>
              line("secret", {
                name: s.name,
                scope: s.scope.join(","),
                sent_to:
                  Object.entries(s.sent_to)
                    .map(([h, n]) => `${h}:${n}`)
                    .join(",") || "none",
                refused: s.refused_requests,
                refused_hosts:
                  Object.entries(s.refused_hosts)
                    .map(([h, n]) => `${h}:${n}`)
                    .join(",") || undefined,
              }),
            )
            .join(""),
      );
    });

  const file = ws.command("file").description("Read, write and list files in /workspace without shell quoting.");
  file
    .command("list")
    .argument("<workspace>", "id or name")
    .argument("[path]", "directory, relative to /workspace", ".")
    .option("--recursive", "descend into subdirectories")
    .option("--json", "print JSON")
    .action(async (ref: string, path: string, o: { recursive?: boolean; json?: boolean }) => {
      const r = await (await pyro()).listWorkspaceFiles(ref, path, { recursive: Boolean(o.recursive) });
      emit(o.json, r, () =>
        r.entries
          .map(
            (e) =>
              `${e.type === "directory" ? "d" : e.type === "symlink" ? "l" : "-"} ${e.mode} ${String(e.size).padStart(10)} ${e.path}${e.target ? ` -> ${e.target}` : ""}\n`,
          )
          .join(""),
      );
    });
  file
    .command("read")
    .argument("<workspace>", "id or name")
    .argument("<path>", "file, relative to /workspace")
    .option("--max-bytes <n>", `read at most this many bytes (default ${FILE_READ_DEFAULT_MAX_BYTES})`, integerOption(1, FILE_READ_MAX_BYTES))
    .option("--json", "print JSON")
    .action(async (ref: string, path: string, o: { maxBytes?: number; json?: boolean }) => {
      const r = await (await pyro()).readWorkspaceFile(ref, path, o.maxBytes ? { maxBytes: o.maxBytes } : {});
      if (o.json) return printJson(r);
      process.stdout.write(r.encoding === "utf8" ? r.content : Buffer.from(r.content, "base64"));
      if (r.truncated)
        process.stderr.write(`[workspace-file-read] truncated: showed ${o.maxBytes ?? FILE_READ_DEFAULT_MAX_BYTES} of ${r.size} bytes (use --max-bytes)\n`);
    });
  file
    .command("write")
    .argument("<workspace>", "id or name")
    .argument("<path>", "file, relative to /workspace")
    .option("--text <text>", "content to write")
    .option("--text-file <hostPath>", "read the content from this host file ('-' for stdin)")
    .option("--from-file <hostPath>", "same as --text-file")
    .option("--json", "print JSON")
    .action(async (ref: string, path: string, o: { text?: string; textFile?: string; fromFile?: string; json?: boolean }) => {
      const sources = [o.text, o.textFile, o.fromFile].filter((v) => v !== undefined);
      if (sources.length !== 1) throw new InvalidArgumentError("give exactly one of --text or --text-file");
      const text = o.text ?? (o.textFile !== undefined ? await readHostText(o.textFile, "--text-file") : await readHostText(o.fromFile!, "--from-file"));
      const r = await (await pyro()).writeWorkspaceFile(ref, path, text);
      emit(o.json, r, () => line("workspace-file-write", r));
    });

  ws.command("patch")
    .description("Apply patches.")
    .command("apply")
    .description("Apply a unified diff; if any hunk fails, nothing changes.")
    .argument("<workspace>", "id or name")
    .option("--patch-file <file>", "patch file on the host ('-' for stdin)")
    .option("--patch <file>", "same as --patch-file")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { patch?: string; patchFile?: string; json?: boolean }) => {
      if ((o.patch === undefined) === (o.patchFile === undefined)) throw new InvalidArgumentError("give exactly one of --patch-file FILE or --patch FILE");
      const text = o.patchFile !== undefined ? await readHostText(o.patchFile, "--patch-file") : await readHostText(o.patch!, "--patch");
      const r = await (await pyro()).applyWorkspacePatch(ref, text);
      emit(
        o.json,
        r,
        () => line("workspace-patch-apply", { workspace_id: r.workspace_id }) + r.files.map((f) => `  ${f.status.padEnd(8)} ${f.path}\n`).join(""),
      );
    });

  ws.command("sync")
    .description("Copy host files in.")
    .command("push")
    .description("Copy a host directory or archive into the workspace.")
    .argument("<workspace>", "id or name")
    .argument("<source>", "host directory or .tar/.tar.gz/.tgz")
    .option("--dest <path>", "destination, relative to /workspace", ".")
    .option("--json", "print JSON")
    .action(async (ref: string, source: string, o: { dest: string; json?: boolean }) => {
      const r = await (await pyro()).pushWorkspaceSync(ref, source, { dest: o.dest });
      emit(o.json, r, () => line("workspace-sync-push", { workspace_id: r.workspace_id, destination: r.destination, files: r.files, bytes: r.bytes }));
    });

  ws.command("diff")
    .description("Unified diff of /workspace against the baseline captured at create, a page at a time.")
    .argument("<workspace>", "id or name")
    .option("--summary", "changed paths and counts only (no contents read)")
    .option("--offset <n>", "first changed file to show (a previous page's next_offset)", integerOption(0, Number.MAX_SAFE_INTEGER))
    .option(
      "--limit <n>",
      `changed files per page (patch: up to ${DIFF_PAGE_LIMITS.patchFiles}; summary: up to ${DIFF_PAGE_LIMITS.summaryFiles})`,
      integerOption(1, DIFF_PAGE_LIMITS.summaryFiles),
    )
    .option("--json", "print JSON")
    .action(async (ref: string, o: { summary?: boolean; offset?: number; limit?: number; json?: boolean }) => {
      const r = await (await pyro()).diffWorkspace(ref, {
        ...(o.summary ? { summary: true } : {}),
        ...(o.offset !== undefined ? { offset: o.offset } : {}),
        ...(o.limit !== undefined ? { limit: o.limit } : {}),
      });
      const more = typeof r.next_offset === "number" ? `# ${r.total_files} changed in all; next page: --offset ${r.next_offset}\n` : "";
      emit(
        o.json,
        r,
        () => (o.summary ? r.files.map((f) => `${f.status[0]!.toUpperCase()} ${f.path}\n`).join("") : r.patch) + more || "no changes since the baseline\n",
      );
    });

  ws.command("export")
    .description("Copy a file (as itself) or a directory (as a .tar) out to the host.")
    .argument("<workspace>", "id or name")
    .argument("<path>", "path relative to /workspace")
    .requiredOption("--output <hostPath>", "where to write it (must not exist)")
    .option("--json", "print JSON")
    .action(async (ref: string, path: string, o: { output: string; json?: boolean }) => {
      const r = await (await pyro()).exportWorkspace(ref, path, o.output);
      emit(o.json, r, () => line("workspace-export", r));
    });

  const snapshot = ws.command("snapshot").description("Named snapshots of a running workspace (memory and disk).");
  snapshot
    .command("create")
    .argument("<workspace>", "id or name")
    .argument("<name>", "snapshot name")
    .option("--json", "print JSON")
    .action(async (ref: string, name: string, o: { json?: boolean }) => {
      const r = await (await pyro()).createSnapshot(ref, name);
      emit(o.json, r, () => line("workspace-snapshot-create", r));
    });
  snapshot
    .command("list")
    .argument("<workspace>", "id or name")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { json?: boolean }) => {
      const r = await (await pyro()).listSnapshots(ref);
      emit(o.json, r, () => r.snapshots.map((s) => line("snapshot", s)).join(""));
    });
  snapshot
    .command("delete")
    .argument("<workspace>", "id or name")
    .argument("<name>", "snapshot name")
    .option("--json", "print JSON")
    .action(async (ref: string, name: string, o: { json?: boolean }) => {
      const r = await (await pyro()).deleteSnapshot(ref, name);
      emit(o.json, r, () => line("workspace-snapshot-delete", r));
    });

  registerWorkspaceFullCommands(ws, pyro);

  ws.command("fork")
    .description(
      "New workspaces that continue from this one's current memory and disks (processes, shells, services included) while it keeps running; writes afterwards are isolated both ways.",
    )
    .argument("<workspace>", "id or name")
    .option(
      "--count <n>",
      `how many copies, ${FORK_COUNT.min}-${FORK_COUNT.max} (default: one per --name, at least ${FORK_COUNT.default})`,
      integerOption(FORK_COUNT.min, FORK_COUNT.max),
    )
    .option("--name <name>", "a copy's name, in order (repeatable)", collect)
    .option("--json", "print JSON")
    .action(async (ref: string, o: { count?: number; name?: string[]; json?: boolean }) => {
      const r = await (await pyro()).forkWorkspace(ref, { ...(o.count !== undefined ? { count: o.count } : {}), ...(o.name ? { names: o.name } : {}) });
      emit(o.json, r, () =>
        [
          line("workspace-fork", { source: r.source_workspace_id, memory: r.memory, source_paused_ms: r.source_paused_ms, fork_ms: r.fork_ms, note: r.note }),
          ...r.forks.map((f) => line("fork", { workspace_id: f.workspace_id, name: f.name, state: f.state, start_mode: f.vm?.start_mode, fork_ms: f.fork_ms })),
        ].join(""),
      );
    });

  ws.command("reset")
    .description("Put the workspace back to a snapshot (default: the baseline from create).")
    .argument("<workspace>", "id or name")
    .option("--snapshot <name>", "snapshot to restore", "baseline")
    .option("--json", "print JSON")
    .action(async (ref: string, o: { snapshot: string; json?: boolean }) => {
      const r = await (await pyro()).resetWorkspace(ref, { snapshot: o.snapshot });
      emit(o.json, r, () => line("workspace-reset", r));
    });
}
