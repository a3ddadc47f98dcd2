import { PyroError } from "../errors.js";
import { workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { networkEnvironment } from "./workspace-network.js";
import { secretEnvironment } from "./workspace-secrets.js";
import { renderPlain } from "./terminal-text.js";

export const SHELL_READ_DEFAULT_MAX_CHARS = 65_536;

export interface ShellView {
  workspace_id: string;
  shell_id: string;
  running: boolean;
  exit_code: number | null;
  cols: number;
  rows: number;
}

function view(workspaceId: string, h: Record<string, unknown>): ShellView {
  return {
    workspace_id: workspaceId,
    shell_id: String(h.shell_id),
    running: h.running === true,
    exit_code: typeof h.exit_code === "number" ? h.exit_code : null,
    cols: Number(h.cols),
    rows: Number(h.rows),
  };
}

/** Length of the longest prefix that does not end inside a UTF-8 sequence (the cursor resumes there). */
export function wholeCharacters(bytes: Buffer): number {
  let lead = bytes.length - 1;
  while (lead >= 0 && lead > bytes.length - 4 && (bytes[lead]! & 0xc0) === 0x80) lead--;
  if (lead < 0 || bytes[lead]! < 0xc0) return bytes.length; // ends in ASCII or a stray byte
  const width = bytes[lead]! >= 0xf0 ? 4 : bytes[lead]! >= 0xe0 ? 3 : 2;
  return lead + width <= bytes.length ? bytes.length : lead;
}

/** Opens an interactive shell (bash, on a real PTY in the guest) that lives until closed. */
export async function openShell(ctx: WorkspaceContext, ref: string, options: { cwd?: string; cols?: number; rows?: number; secretEnv?: string[] } = {}): Promise<ShellView> {
  const cwd = workspacePath(options.cwd ?? WORKSPACE_ROOT);
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    const { header } = await vm.agent.request("shell.open", {
      argv: ["/bin/bash", "-i"],
      cwd,
      cols: options.cols ?? 120,
      rows: options.rows ?? 30,
      env: { ...networkEnvironment(record), ...secretEnvironment(session.secrets, options.secretEnv) },
    });
    return view(record.id, header);
  });
}

export interface ShellReadOptions {
  cursor?: number;
  maxChars?: number;
  /** Strip terminal control sequences by rendering the output in a terminal emulator. */
  plain?: boolean;
  /** Wait until the shell has printed nothing for this long (capped at 30 s). */
  waitForIdleMs?: number;
}

/** Output from `cursor` on; pass `next_cursor` back to page forward. */
export async function readShell(ctx: WorkspaceContext, ref: string, shellId: string, options: ShellReadOptions = {}) {
  const maxChars = options.maxChars ?? SHELL_READ_DEFAULT_MAX_CHARS;
  if (!(maxChars > 0)) throw new PyroError("INVALID_ARGUMENT", "max chars must be positive");
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const { header, payload } = await vm.agent.request(
      "shell.read",
      { shell_id: shellId, cursor: options.cursor ?? 0, max_bytes: maxChars, ...(options.waitForIdleMs ? { wait_for_idle_ms: options.waitForIdleMs } : {}) },
      undefined,
      { timeoutMs: 60_000 },
    );
    const bytes = payload.subarray(0, wholeCharacters(payload));
    const raw = bytes.toString("utf8");
    const shell = view(record.id, header);
    const next = Number(header.cursor) + bytes.length;
    return {
      ...shell,
      cursor: Number(header.cursor),
      next_cursor: next,
      more: next < Number(header.end_cursor),
      dropped_bytes: Number(header.dropped_bytes),
      plain: Boolean(options.plain),
      output: options.plain ? await renderPlain(raw, shell.cols) : raw,
    };
  });
}

export async function writeShell(ctx: WorkspaceContext, ref: string, shellId: string, input: string, options: { newline?: boolean } = {}) {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const data = Buffer.from(options.newline === false ? input : `${input}\n`, "utf8");
    await vm.agent.request("shell.write", { shell_id: shellId }, data);
    return { workspace_id: record.id, shell_id: shellId, bytes: data.length };
  });
}

export async function signalShell(ctx: WorkspaceContext, ref: string, shellId: string, signal: "INT" | "TERM" | "KILL" | "HUP" = "INT") {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    await vm.agent.request("shell.signal", { shell_id: shellId, signal });
    return { workspace_id: record.id, shell_id: shellId, signal };
  });
}

export async function closeShell(ctx: WorkspaceContext, ref: string, shellId: string) {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const { header } = await vm.agent.request("shell.close", { shell_id: shellId });
    return { ...view(record.id, header), closed: true };
  });
}
