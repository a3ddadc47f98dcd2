import { SHELL_READ_DEFAULTS, type ShellSignal } from "./workspace-limits.js";
import { PyroError } from "../errors.js";
import { workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { networkEnvironment } from "./workspace-network.js";
import type { Redactor } from "./secret-redaction.js";
import { secretEnvironment } from "./workspace-secrets.js";
import { renderPlain } from "./terminal-text.js";

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
export async function openShell(
  ctx: WorkspaceContext,
  ref: string,
  options: { cwd?: string; cols?: number; rows?: number; secretEnv?: string[] } = {},
): Promise<ShellView> {
  const cwd = workspacePath(options.cwd ?? WORKSPACE_ROOT);
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    const shell = await vm.agent.shellOpen({
      argv: ["/bin/bash", "-i"],
      cwd,
      cols: options.cols ?? 120,
      rows: options.rows ?? 30,
      env: { ...networkEnvironment(record), ...secretEnvironment(session.secrets, options.secretEnv) },
    });
    return view(record.id, shell);
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

/** Output a shell read fetched: the page from `cursor` on, and the bytes just before it. */
export interface ShellChunk {
  /** Stream offset of bytes[0]. */
  cursor: number;
  bytes: Buffer;
  /** Bytes just before `cursor` (context for redaction; not shown). */
  before: Buffer;
  /** Where the output so far ends. */
  endCursor: number;
  /** Whether the shell can still print more after endCursor. */
  running: boolean;
}

/**
 * One page of shell output: at most `maxChars` bytes from the chunk's cursor, cut on a character
 * boundary, secrets redacted in the raw stream before any cut or rendering. A secret crossing the
 * page's end is replaced whole and the page ends after it, so paging by next_cursor never shows a
 * piece of it; the start of one still being written is left for the next page. Plain mode renders
 * the redacted stream.
 */
export async function shellPage(chunk: ShellChunk, maxChars: number, options: { plain: boolean; cols: number }, redactor: Redactor) {
  const data = Buffer.concat([chunk.before, chunk.bytes]);
  const from = chunk.before.length;
  const to = from + wholeCharacters(chunk.bytes.subarray(0, maxChars));
  const shown = redactor.window(data, from, to, {
    cutBefore: chunk.cursor - chunk.before.length > 0,
    cutAfter: chunk.running || chunk.cursor + chunk.bytes.length < chunk.endCursor,
    holdBack: true,
  });
  const next = chunk.cursor + (shown.end - from);
  const raw = shown.bytes.toString("utf8");
  return { cursor: chunk.cursor, next_cursor: next, more: next < chunk.endCursor, output: options.plain ? await renderPlain(raw, options.cols) : raw };
}

/** Output from `cursor` on; pass `next_cursor` back to page forward. */
export async function readShell(ctx: WorkspaceContext, ref: string, shellId: string, options: ShellReadOptions = {}) {
  const maxChars = options.maxChars ?? SHELL_READ_DEFAULTS.maxChars;
  if (!(maxChars > 0)) throw new PyroError("INVALID_ARGUMENT", "max chars must be positive");
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    const context = session.redactor.contextBytes;
    const { header, payload } = await vm.agent.shellRead(
      shellId,
      // Past the page's end too, so a secret crossing it is seen whole.
      { cursor: options.cursor ?? 0, maxBytes: maxChars + context, waitForIdleMs: options.waitForIdleMs },
      60_000,
    );
    const cursor = Number(header.cursor);
    let before: Buffer = Buffer.alloc(0);
    if (context > 0 && cursor > 0) {
      // The bytes before the page, so a secret the page starts inside of is recognised too.
      const want = Math.max(0, cursor - context);
      const r = await vm.agent.shellRead(shellId, { cursor: want, maxBytes: cursor - want });
      const start = Number(r.header.cursor); // later than `want` if that output was dropped
      if (start <= cursor && start + r.payload.length >= cursor) before = r.payload.subarray(0, cursor - start);
    }
    const shell = view(record.id, header);
    const page = await shellPage(
      { cursor, bytes: payload, before, endCursor: Number(header.end_cursor), running: shell.running },
      maxChars,
      { plain: Boolean(options.plain), cols: shell.cols },
      session.redactor,
    );
    return {
      ...shell,
      cursor: page.cursor,
      next_cursor: page.next_cursor,
      more: page.more,
      dropped_bytes: Number(header.dropped_bytes),
      plain: Boolean(options.plain),
      output: page.output,
    };
  });
}

export async function writeShell(ctx: WorkspaceContext, ref: string, shellId: string, input: string, options: { newline?: boolean } = {}) {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const data = Buffer.from(options.newline === false ? input : `${input}\n`, "utf8");
    await vm.agent.shellWrite(shellId, data);
    return { workspace_id: record.id, shell_id: shellId, bytes: data.length };
  });
}

export async function signalShell(ctx: WorkspaceContext, ref: string, shellId: string, signal: ShellSignal = "INT") {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    await vm.agent.shellSignal(shellId, signal);
    return { workspace_id: record.id, shell_id: shellId, signal };
  });
}

export async function closeShell(ctx: WorkspaceContext, ref: string, shellId: string) {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const shell = await vm.agent.shellClose(shellId);
    return { ...view(record.id, shell), closed: true };
  });
}
