import { posix } from "node:path";
import { z } from "zod";
import { MAX_HEADER_LEN } from "./frame-codec.js";

/**
 * What a reply to each request may look like, checked on the host: the guest is root-controlled and
 * may answer anything. Limits come from the request itself (an exec's output cap, a read's
 * max_bytes), so each is declared once, here, next to the shape it bounds.
 */

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const int = z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER);
const shortText = z.string().max(4096);
/** A guest path: no NUL, bounded (PATH_MAX). */
const guestPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => !p.includes("\0"), "contains a NUL byte");

/** Header bytes of any reply whose size does not grow with the guest's data. */
export const SMALL_HEADER_BYTES = 64 * 1024;
/** Most services/entries a listing may carry (the agent answers far fewer). */
const MAX_LISTED_SERVICES = 1024;
/** file.list's own default when the request names no max_entries. */
export const DEFAULT_LIST_MAX_ENTRIES = 10_000;

export const fileEntrySchema = z.looseObject({
  path: guestPath,
  type: z.enum(["file", "directory", "symlink", "fifo", "socket", "char_device", "block_device", "other"]),
  size: count,
  mode: z.number().int().min(0).max(0o7777),
  mtime_ms: int,
  target: z.string().max(4096).optional(),
});

const serviceState = z.looseObject({
  name: z.string().min(1).max(256),
  pid: count,
  running: z.boolean(),
  exit_code: int.nullable(),
  signal: int.nullable(),
  stopped_by_request: z.boolean(),
  started_uptime_ms: count,
  stdout_path: guestPath,
  stderr_path: guestPath,
});

const shellState = z.looseObject({
  shell_id: z.string().min(1).max(256),
  pid: count,
  running: z.boolean(),
  exit_code: int.nullable(),
  cols: count,
  rows: count,
});

const execReply = z.looseObject({
  exit_code: int,
  signal: int.nullable().optional(),
  timed_out: z.boolean(),
  duration_ms: count,
  stdout_len: count,
  stdout_total: count,
  stdout_head_len: count,
  stderr_len: count,
  stderr_total: count,
  stderr_head_len: count,
  /** Present when the request asked for sync_after and the agent flushed its page cache before answering. */
  synced: z.boolean().optional(),
});

const shellRead = shellState.extend({ cursor: count, next_cursor: count, end_cursor: count, dropped_bytes: count });

export const errorReplySchema = z.looseObject({
  ok: z.literal(false),
  error: z.looseObject({ code: z.string().max(128), message: z.string().max(SMALL_HEADER_BYTES) }),
});

/** The request fields a contract reads its limits from. */
type RequestFields = Record<string, unknown>;

interface ReplyContract {
  schema: z.ZodType<Record<string, unknown>>;
  /** Largest header this reply may have. */
  maxHeaderBytes: number;
  /** Largest payload this reply may carry, from the request's own limits. */
  maxPayloadBytes: (request: RequestFields) => number;
  /** Checks that need the request or the payload; returns what is wrong, if anything. */
  check?: (reply: Record<string, unknown>, request: RequestFields, payloadBytes: number) => string | undefined;
}

const noPayload = () => 0;
const requestCount = (request: RequestFields, field: string, fallback: number) => {
  const value = request[field];
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : fallback;
};

/** The exec output cap per stream the host asks for when the caller names none. */
export const DEFAULT_EXEC_OUTPUT_BYTES = 1 << 20;
/** file.read's default max_bytes. */
export const DEFAULT_READ_BYTES = 1 << 20;
/** tree.manifest's default max_bytes (the agent's). */
const DEFAULT_MANIFEST_BYTES = 64 << 20;
/** shell.read's default max_bytes (the agent's). */
const DEFAULT_SHELL_READ_BYTES = 65_536;

function execCheck(r: Record<string, unknown>, request: RequestFields, payloadBytes: number): string | undefined {
  const h = r as z.infer<typeof execReply>;
  const cap = requestCount(request, "max_output_bytes", DEFAULT_EXEC_OUTPUT_BYTES);
  if (h.stdout_len + h.stderr_len !== payloadBytes) return `exec reply declares ${h.stdout_len}+${h.stderr_len} output bytes but carries ${payloadBytes}`;
  for (const stream of ["stdout", "stderr"] as const) {
    const len = h[`${stream}_len`];
    if (len > cap) return `exec ${stream} is ${len} bytes, over the requested cap of ${cap}`;
    if (h[`${stream}_head_len`] > len) return `exec ${stream}_head_len is past the end of its ${len} bytes`;
    if (h[`${stream}_total`] < len) return `exec ${stream}_total is smaller than the bytes sent`;
  }
  return undefined;
}

function listCheck(r: Record<string, unknown>, request: RequestFields): string | undefined {
  const entries = r.entries as z.infer<typeof fileEntrySchema>[];
  const max = requestCount(request, "max_entries", DEFAULT_LIST_MAX_ENTRIES);
  if (entries.length > max) return `file.list sent ${entries.length} entries, more than the ${max} asked for`;
  const root = typeof request.path === "string" ? posix.normalize(request.path).replace(/\/+$/, "") : "";
  for (const entry of entries) {
    const problem = entryPathProblem(entry.path, root);
    if (problem) return `file.list entry '${entry.path.slice(0, 200)}' ${problem}`;
  }
  return undefined;
}

/** Why a listed path is not a plain path inside the listed directory, if it is not. */
export function entryPathProblem(path: string, root: string): string | undefined {
  if (!path.startsWith("/")) return "is not absolute";
  if (path.split("/").some((part) => part === ".." || part === ".")) return "has '.' or '..' segments";
  if (posix.normalize(path) !== path || path.endsWith("/")) return "is not a normalised path";
  if (!path.startsWith(`${root}/`)) return `is outside the listed directory ${root || "/"}`;
  return undefined;
}

const empty = z.looseObject({});
const pathReply = z.looseObject({ path: guestPath });
const probeReply = z.looseObject({ ready: z.boolean(), detail: shortText });

const CONTRACTS = {
  hello: {
    schema: z.looseObject({ protocol: int, agent_version: z.string().max(64), boot_ms: count, uptime_ms: count }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: noPayload,
  },
  exec: {
    schema: execReply,
    maxHeaderBytes: SMALL_HEADER_BYTES,
    // Each stream is capped separately by the guest.
    maxPayloadBytes: (request) => 2 * requestCount(request, "max_output_bytes", DEFAULT_EXEC_OUTPUT_BYTES),
    check: execCheck,
  },
  "file.read": {
    schema: z.looseObject({ size: count, offset: count, truncated: z.boolean() }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: (request) => requestCount(request, "max_bytes", DEFAULT_READ_BYTES),
  },
  "file.write": { schema: z.looseObject({ path: guestPath, bytes: count }), maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "file.stat": { schema: fileEntrySchema, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "file.list": {
    schema: z.looseObject({ entries: z.array(fileEntrySchema), truncated: z.boolean() }),
    maxHeaderBytes: MAX_HEADER_LEN,
    maxPayloadBytes: noPayload,
    check: listCheck,
  },
  "file.extract": { schema: z.looseObject({ entries: count }), maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "tree.unpack": { schema: z.looseObject({ entries: count }), maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "workspace.mount": {
    schema: z.looseObject({ mounted: z.literal(true), already: z.boolean() }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: noPayload,
  },
  "tree.manifest": {
    schema: z.looseObject({ entries: count, truncated: z.boolean() }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: (request) => requestCount(request, "max_bytes", DEFAULT_MANIFEST_BYTES),
  },
  "tree.changes": {
    schema: z.looseObject({ entries: count, truncated: z.boolean() }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: (request) => requestCount(request, "max_bytes", DEFAULT_MANIFEST_BYTES),
  },
  "fs.freeze": {
    schema: z.looseObject({ frozen: z.literal(true), token: count.min(1), hold_ms: count.min(1) }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: noPayload,
    // The host bounds its own work by the hold: never longer than it asked for.
    check: (r, request) =>
      typeof request.hold_ms === "number" && (r.hold_ms as number) > request.hold_ms
        ? `fs.freeze granted ${r.hold_ms as number} ms, more than the ${request.hold_ms} asked for`
        : undefined,
  },
  "fs.thaw": { schema: z.looseObject({ held: z.boolean() }), maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "file.mkdir": { schema: pathReply, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "file.remove": { schema: pathReply, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "service.start": { schema: serviceState, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "service.status": { schema: serviceState, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "service.stop": { schema: serviceState, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "service.list": {
    schema: z.looseObject({ services: z.array(serviceState).max(MAX_LISTED_SERVICES) }),
    maxHeaderBytes: MAX_HEADER_LEN,
    maxPayloadBytes: noPayload,
  },
  "shell.open": { schema: shellState, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "shell.read": {
    schema: shellRead,
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: (request) => requestCount(request, "max_bytes", DEFAULT_SHELL_READ_BYTES),
    check: (r, _request, payloadBytes) => {
      const h = r as z.infer<typeof shellRead>;
      if (h.next_cursor - h.cursor !== payloadBytes) return `shell.read cursors span ${h.next_cursor - h.cursor} bytes but the reply carries ${payloadBytes}`;
      if (h.end_cursor < h.next_cursor) return "shell.read end_cursor is before next_cursor";
      return undefined;
    },
  },
  "shell.write": { schema: z.looseObject({ shell_id: z.string().max(256), bytes: count }), maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "shell.signal": {
    schema: z.looseObject({ shell_id: z.string().max(256), signal: int, process_group: int }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: noPayload,
  },
  "shell.close": { schema: shellState, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "probe.tcp": { schema: probeReply, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "probe.http": { schema: probeReply, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  shutdown: { schema: empty, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  sync: { schema: empty, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload },
  "identity.set": {
    schema: z.looseObject({ hostname: z.string().max(64), files_written: z.boolean() }),
    maxHeaderBytes: SMALL_HEADER_BYTES,
    maxPayloadBytes: noPayload,
  },
} satisfies Record<string, ReplyContract>;

/** Every op the host sends. */
export type AgentOp = keyof typeof CONTRACTS;
/**
 * The header of a successful reply to `op`, as its contract's schema admits it: the type comes from
 * the same declaration that validates the reply, so the two cannot drift apart.
 */
export type AgentReply<Op extends AgentOp> = z.infer<(typeof CONTRACTS)[Op]["schema"]>;
export type ServiceState = AgentReply<"service.status">;
export type ShellState = AgentReply<"shell.open">;
export type ShellReadReply = AgentReply<"shell.read">;
export type ProbeReply = AgentReply<"probe.tcp">;

/** Ops without a contract of their own still get bounded, payload-free replies. */
const UNKNOWN_OP: ReplyContract = { schema: empty, maxHeaderBytes: SMALL_HEADER_BYTES, maxPayloadBytes: noPayload };

export function replyContract(op: string): ReplyContract {
  return Object.hasOwn(CONTRACTS, op) ? (CONTRACTS[op as AgentOp] as ReplyContract) : UNKNOWN_OP;
}

/**
 * Checks a reply against its request: shape, types and request-derived limits. Returns what is
 * wrong in one line, or undefined when the reply is acceptable.
 */
export function replyProblem(op: string, request: RequestFields, header: Record<string, unknown>, payloadBytes: number): string | undefined {
  const contract = replyContract(op);
  if (header.ok === false) {
    const parsed = errorReplySchema.safeParse(header);
    if (!parsed.success) return `${op} error reply is malformed (${describeIssue(parsed.error)})`;
    return payloadBytes > 0 ? `${op} error reply carries a ${payloadBytes}-byte payload` : undefined;
  }
  if (header.ok !== true) return `${op} reply has no boolean 'ok'`;
  const max = contract.maxPayloadBytes(request);
  if (payloadBytes > max) return `${op} reply carries ${payloadBytes} payload bytes, more than the ${max} the request allows`;
  const parsed = contract.schema.safeParse(header);
  if (!parsed.success) return `${op} reply has the wrong shape (${describeIssue(parsed.error)})`;
  return contract.check?.(header, request, payloadBytes);
}

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "invalid";
  const where = issue.path.length ? issue.path.slice(0, 4).join(".") : "header";
  return `${where}: ${issue.message}`.slice(0, 300);
}
