import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { PyroError } from "../errors.js";
import { randomInt } from "node:crypto";
import { dirname } from "node:path";
import { encodeFrame, FrameDecoder, MAX_HEADER_LEN, MAX_PAYLOAD_LEN } from "./frame-codec.js";
import { checkGuestRequest } from "./request-limits.js";
import {
  DEFAULT_EXEC_OUTPUT_BYTES,
  DEFAULT_LIST_MAX_ENTRIES,
  DEFAULT_READ_BYTES,
  replyContract,
  replyProblem,
  type AgentOp,
  type AgentReply,
  type ProbeReply,
  type ServiceState,
  type ShellReadReply,
  type ShellState,
} from "./reply-contracts.js";
import type { ExecRequest, GuestExecResult, GuestFileEntry, HelloInfo } from "./messages.js";

export const PROTOCOL_VERSION = 1;

interface Pending {
  resolve: (reply: { header: Record<string, unknown>; payload: Buffer }) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  op: string;
  /** The request's own fields: its limits bound the reply (reply-contracts.ts). */
  fields: Record<string, unknown>;
}

export interface RequestOptions {
  /** Give up waiting for the reply after this long (the guest may still be working). */
  timeoutMs?: number;
}

/** How long a request without its own timeout may wait: a guest that never answers must not hang pyro. */
export const DEFAULT_REPLY_TIMEOUT_MS = 300_000;
/** A frame that started arriving must keep arriving: the agent writes each frame in one go. */
export const FRAME_STALL_MS = 10_000;
/** How long an op's sync_after may add: as long as a `sync` request gets. */
const SYNC_TIMEOUT_MS = 60_000;
/**
 * Frames nobody asked for on one connection (events, answers to requests that already timed out).
 * The agent sends one ready event per boot and an error per malformed request; more is a flood.
 */
export const MAX_UNSOLICITED_FRAMES = 256;
/** Bytes of such frames on one connection. */
export const MAX_UNSOLICITED_BYTES = 1 << 20;
/**
 * Bytes dropped before the agent answers this connection's first request. QEMU holds what the guest
 * wrote while no host was connected and delivers it to the next connection, so a new connection may
 * start with the rest of an earlier one: whole frames, or the tail of one. Dropped bytes are never
 * buffered; this bounds only how long the guest can keep the host reading them.
 */
export const MAX_LEFTOVER_BYTES = 2 * (MAX_HEADER_LEN + MAX_PAYLOAD_LEN);
/** Timed-out request ids whose late answers are still accepted (and dropped), newest kept. */
const MAX_ABANDONED_IDS = 256;

/** Talks to the in-guest agent over the unix socket QEMU exposes for the virtio-serial port. */
export class AgentClient {
  private readonly decoder = new FrameDecoder({ maxHeaderBytes: MAX_HEADER_LEN, maxPayloadBytes: () => this.largestAllowedPayload() });
  private readonly pending = new Map<number, Pending>();
  private readonly abandoned = new Set<number>();
  /**
   * Ids start at a random point on every connection, so a reply left over from an earlier
   * connection can never be taken for the answer to a request of this one.
   */
  private readonly firstId = randomInt(1, 2 ** 47);
  private nextId = this.firstId;
  private closedError: PyroError | undefined;
  private readyWaiters: Array<() => void> = [];
  private sawReady = false;
  /** Whether the agent has answered a request of this connection: leftovers end there. */
  private sawOwnReply = false;
  private leftoverBytes = 0;
  private unsolicitedFrames = 0;
  private unsolicitedBytes = 0;
  private stallTimer: NodeJS.Timeout | undefined;
  /** Explains why the channel closed (e.g. "the VM died"); set by the VM owner. */
  closeReason: () => Promise<string> = async () => "the guest agent connection closed";
  /** Names the guest in errors ("workspace 1a2b…"); set by whoever knows it. */
  label: string;

  private constructor(
    private readonly socket: Socket,
    socketPath: string,
  ) {
    this.label = `the VM in ${dirname(socketPath)}`;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined); // 'close' follows and fails what is pending
    socket.on("close", () => {
      this.clearStallTimer();
      void this.closeReason().then((reason) => this.failAll(new PyroError("VM_DIED", reason)));
    });
  }

  /** Connects, retrying while QEMU has not created the socket yet. */
  static async connect(socketPath: string, deadline: number, signal?: AbortSignal): Promise<AgentClient> {
    for (;;) {
      signal?.throwIfAborted();
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(socketPath);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        socket.setNoDelay?.(true);
        return new AgentClient(socket, socketPath);
      } catch (error) {
        if (Date.now() > deadline) {
          throw new PyroError("GUEST_BOOT_FAILED", `cannot connect to the guest agent socket ${socketPath}: ${(error as Error).message}`);
        }
        await sleep(5);
      }
    }
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** The biggest payload any request in flight may receive; nothing is buffered beyond it. */
  private largestAllowedPayload(): number {
    let max = 0;
    for (const p of this.pending.values()) max = Math.max(max, replyContract(p.op).maxPayloadBytes(p.fields));
    return Math.min(max, MAX_PAYLOAD_LEN);
  }

  /**
   * The guest broke the protocol: whatever it sends is hostile from here on. Close the connection
   * and fail everything in flight with one error that says which guest and what it did.
   */
  private violation(what: string): PyroError {
    if (this.closedError) return this.closedError;
    const ops = [...new Set([...this.pending.values()].map((p) => p.op))].join(", ");
    this.failAll(
      new PyroError(
        "GUEST_PROTOCOL_ERROR",
        `the guest agent of ${this.label} broke the protocol${ops ? ` during ${ops}` : ""}: ${what}; the connection was closed. The guest may be compromised: treat its data as untrusted, or delete the workspace`,
        { violation: what },
      ),
    );
    this.socket.destroy();
    return this.closedError!;
  }

  /**
   * For checks above the wire (e.g. a tar the guest produced): records that the guest sent hostile
   * data, closes the connection, and returns the error to throw.
   */
  rejectGuestData(what: string): PyroError {
    return this.violation(what);
  }

  private onData(chunk: Buffer): void {
    if (this.closedError) return;
    this.decoder.push(chunk);
    for (let item = this.decoder.next(); item && !this.closedError; item = this.decoder.next()) {
      if (item.kind === "garbage") {
        // The decoder drops garbage without buffering it. Before this connection's first reply it
        // may be left over from an earlier connection; after it, garbage is an attack.
        if (this.sawOwnReply) this.violation(`sent a malformed frame (${item.reason})`);
        else this.onLeftover(item.skipped);
        continue;
      }
      this.onFrame(item.header, item.payload);
    }
    this.watchForStall();
  }

  private onFrame(header: Record<string, unknown>, payload: Buffer): void {
    const id = header.id;
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) return void this.violation("sent a frame without a valid id");
    const waiter = this.pending.get(id);
    if (!waiter) {
      this.onUnsolicited(id, header, payload);
      return;
    }
    const headerBytes = Buffer.byteLength(JSON.stringify(header));
    const contract = replyContract(waiter.op);
    if (headerBytes > contract.maxHeaderBytes)
      return void this.violation(`answered ${waiter.op} with a ${headerBytes}-byte header (max ${contract.maxHeaderBytes})`);
    const problem = replyProblem(waiter.op, waiter.fields, header, payload.length);
    if (problem) return void this.violation(problem);
    this.pending.delete(id);
    clearTimeout(waiter.timer);
    this.sawOwnReply = true;
    if (header.ok === true) {
      waiter.resolve({ header, payload });
    } else {
      const err = header.error as { code: string; message: string };
      waiter.reject(
        new PyroError(
          // The agent refuses a /workspace path that a guest symlink leads elsewhere: the same refusal as a path outside it.
          err.code === "outside_workspace" ? "PATH_OUTSIDE_WORKSPACE" : "GUEST_OPERATION_FAILED",
          `guest ${waiter.op} failed: ${err.message}`,
          { guestCode: err.code },
        ),
      );
    }
  }

  /** Events, and late answers to requests that timed out: tolerated within a budget. */
  private onUnsolicited(id: number, header: Record<string, unknown>, payload: Buffer): void {
    if (id !== 0) {
      // A late answer to a request that timed out, or a reply left over from an earlier connection.
      if (!this.abandoned.delete(id) && this.sawOwnReply) {
        const ours = id >= this.firstId && id < this.nextId;
        return void this.violation(ours ? `answered request ${id} again (it was already answered)` : `answered request ${id}, which was never sent`);
      }
    } else if (payload.length > 0) {
      return void this.violation(`sent an event with a ${payload.length}-byte payload`);
    }
    if (!this.sawOwnReply) {
      // Before this connection's first reply, frames may be an earlier connection's leftovers (an
      // event flood it was sent included): they draw on the leftover budget, not this connection's.
      this.onLeftover(Buffer.byteLength(JSON.stringify(header)) + payload.length);
      if (id === 0 && header.event === "ready") this.markReady();
      return;
    }
    this.unsolicitedFrames++;
    this.unsolicitedBytes += Buffer.byteLength(JSON.stringify(header)) + payload.length;
    if (this.unsolicitedFrames > MAX_UNSOLICITED_FRAMES) return void this.violation(`sent more than ${MAX_UNSOLICITED_FRAMES} frames nobody asked for`);
    if (this.unsolicitedBytes > MAX_UNSOLICITED_BYTES) return void this.violation(`sent more than ${MAX_UNSOLICITED_BYTES} bytes nobody asked for`);
    if (id === 0 && header.event === "ready") this.markReady();
  }

  private onLeftover(bytes: number): void {
    this.leftoverBytes += bytes;
    if (this.leftoverBytes > MAX_LEFTOVER_BYTES) this.violation(`sent more than ${MAX_LEFTOVER_BYTES} bytes of garbage before answering`);
  }

  /**
   * A partially received frame must complete within FRAME_STALL_MS of the last byte. Before the
   * first reply, a frame that never completes is an earlier connection's cut-off tail: dropped,
   * and the request it swallowed is retried by its caller (waitReady re-sends hello).
   */
  private watchForStall(): void {
    this.clearStallTimer();
    if (this.closedError || this.decoder.missingBytes === 0) return;
    const missing = this.decoder.missingBytes;
    this.stallTimer = setTimeout(() => {
      if (this.sawOwnReply) {
        this.violation(`stopped sending in the middle of a frame (${missing} bytes still missing after ${FRAME_STALL_MS} ms)`);
      } else {
        this.onLeftover(this.decoder.bufferedBytes);
        this.decoder.reset();
      }
    }, FRAME_STALL_MS);
    this.stallTimer.unref();
  }

  private clearStallTimer(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  private markReady(): void {
    this.sawReady = true;
    for (const w of this.readyWaiters.splice(0)) w();
  }

  private failAll(error: PyroError): void {
    this.closedError ??= error;
    this.clearStallTimer();
    this.decoder.reset();
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(this.closedError);
    }
    for (const w of this.readyWaiters.splice(0)) w();
  }

  /** Sends one request and waits for its reply, checked against the op's reply contract. */
  request(
    op: string,
    fields: Record<string, unknown> = {},
    payload?: Buffer,
    options: RequestOptions = {},
  ): Promise<{ header: Record<string, unknown>; payload: Buffer }> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
    try {
      checkGuestRequest(`the guest ${op} request`, { ...fields, id, op }, payload?.length);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.abandon(id);
        reject(new PyroError("GUEST_PROTOCOL", `the guest agent did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, op, fields, timer });
      this.socket.write(encodeFrame({ ...fields, id, op }, payload));
    });
  }

  /** `request` for an op pyro knows: the reply header typed as its contract admits it. */
  private async call<Op extends AgentOp>(
    op: Op,
    fields: Record<string, unknown> = {},
    payload?: Buffer,
    options: RequestOptions = {},
  ): Promise<{ header: AgentReply<Op>; payload: Buffer }> {
    const reply = await this.request(op, fields, payload, options);
    // onFrame resolves only replies that replyProblem found to match this op's schema.
    return { header: reply.header as AgentReply<Op>, payload: reply.payload };
  }

  private abandon(id: number): void {
    this.abandoned.add(id);
    if (this.abandoned.size > MAX_ABANDONED_IDS) this.abandoned.delete(this.abandoned.values().next().value!);
  }

  /**
   * Waits until the agent answers. Bytes sent before the guest opens its port may be held or lost,
   * so hello is re-sent until one comes back (duplicates are ignored by id).
   */
  async waitReady(deadline: number, signal?: AbortSignal): Promise<HelloInfo> {
    while (!this.closedError) {
      signal?.throwIfAborted();
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new PyroError("GUEST_BOOT_FAILED", "the guest agent did not answer before the boot deadline");
      try {
        return await this.hello(Math.min(remaining, this.sawReady ? 2_000 : 500), { newSession: true });
      } catch (error) {
        if (error instanceof PyroError && error.code === "GUEST_PROTOCOL") continue;
        throw error;
      }
    }
    throw this.closedError;
  }

  /**
   * `newSession` (sent on connecting): the agent drops replies to requests of earlier sessions that
   * are still running, e.g. those of a pyro killed mid-request, so they never reach this connection.
   */
  async hello(timeoutMs = 5_000, options: { newSession?: boolean } = {}): Promise<HelloInfo> {
    const { header } = await this.call("hello", { host_time_ms: Date.now(), ...(options.newSession ? { new_session: true } : {}) }, undefined, { timeoutMs });
    const protocol = Number(header.protocol);
    if (protocol !== PROTOCOL_VERSION) {
      throw new PyroError("GUEST_PROTOCOL", `guest agent speaks protocol ${protocol}, pyro speaks ${PROTOCOL_VERSION}; rebuild the agent (scripts/setup.sh)`);
    }
    return { protocol, agentVersion: String(header.agent_version), bootMs: Number(header.boot_ms), uptimeMs: Number(header.uptime_ms) };
  }

  /** Runs a command in the guest. The guest enforces `timeoutMs`; the host waits a little longer. */
  async exec(req: ExecRequest): Promise<GuestExecResult> {
    const stdin = req.stdin === undefined ? undefined : Buffer.from(req.stdin);
    // A sync after the command gets as long as a `sync` request would.
    const hostTimeout = req.timeoutMs !== undefined ? req.timeoutMs + 15_000 + (req.syncAfter ? SYNC_TIMEOUT_MS : 0) : undefined;
    const { header: h, payload } = await this.call("exec", execFields(req), stdin, { timeoutMs: hostTimeout });
    // An agent older than sync_after ran the command without flushing: flush now.
    if (req.syncAfter && h.synced !== true) await this.sync();
    const outLen = Number(h.stdout_len);
    return {
      exitCode: Number(h.exit_code),
      signal: typeof h.signal === "number" ? h.signal : null,
      timedOut: h.timed_out === true,
      durationMs: Number(h.duration_ms),
      stdout: { bytes: payload.subarray(0, outLen), totalBytes: Number(h.stdout_total), headLength: Number(h.stdout_head_len) },
      stderr: { bytes: payload.subarray(outLen), totalBytes: Number(h.stderr_total), headLength: Number(h.stderr_head_len) },
    };
  }

  async readFile(path: string, options: { offset?: number; maxBytes?: number } = {}): Promise<{ data: Buffer; size: number; truncated: boolean }> {
    const { header, payload } = await this.call("file.read", { path, offset: options.offset ?? 0, max_bytes: options.maxBytes ?? DEFAULT_READ_BYTES });
    return { data: payload, size: Number(header.size), truncated: header.truncated === true };
  }

  async writeFile(path: string, data: Buffer | string, options: { mode?: number; append?: boolean } = {}): Promise<void> {
    await this.call("file.write", { path, mode: options.mode ?? 0o644, append: options.append ?? false, mkdirs: true }, Buffer.from(data));
  }

  async stat(path: string): Promise<GuestFileEntry> {
    const { header } = await this.call("file.stat", { path });
    return toEntry(header);
  }

  async list(path: string, options: { recursive?: boolean; maxEntries?: number } = {}): Promise<{ entries: GuestFileEntry[]; truncated: boolean }> {
    const { header } = await this.call("file.list", {
      path,
      recursive: options.recursive ?? false,
      max_entries: options.maxEntries ?? DEFAULT_LIST_MAX_ENTRIES,
    });
    const entries = (header.entries as Record<string, unknown>[]).map(toEntry);
    return { entries, truncated: header.truncated === true };
  }

  /**
   * Flushes the guest's page cache to its virtual disk: what was written survives a killed VMM.
   * With `directory`, only the filesystem holding it (an agent that predates this flushes all).
   */
  async sync(directory?: string): Promise<void> {
    await this.call("sync", directory === undefined ? {} : { path: directory }, undefined, { timeoutMs: SYNC_TIMEOUT_MS });
  }

  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.call("file.remove", { path, recursive: options.recursive ?? false });
  }

  /**
   * Unpacks a tar already staged in the guest into `dest`, every entry created beneath `dest` by the
   * agent (links already in the guest are never written through).
   */
  async extractArchive(archive: string, dest: string): Promise<void> {
    await this.call("file.extract", { archive, path: dest }, undefined, { timeoutMs: 600_000 });
  }

  /**
   * Unpacks a tar sent as the request's payload (whole entries, at most a frame's payload) into
   * `dest`, beneath it as extractArchive does, without staging it on the guest's disk. Returns the
   * number of entries the guest says it created.
   */
  async unpackTree(dest: string, tar: Buffer): Promise<number> {
    const { header } = await this.call("tree.unpack", { path: dest }, tar, { timeoutMs: 600_000 });
    return header.entries;
  }

  async mkdir(path: string): Promise<void> {
    await this.call("file.mkdir", { path });
  }

  /**
   * Makes a restored copy of a saved VM its own machine: reseeds the kernel RNG from host entropy
   * (copies of one template would otherwise draw the same random numbers), sets the clock from the
   * host, and gives it its own hostname and machine-id.
   */
  async setIdentity(identity: GuestIdentity): Promise<{ filesWritten: boolean }> {
    const { header } = await this.call(
      "identity.set",
      { hostname: identity.hostname, machine_id: identity.machineId, host_time_ms: Date.now() },
      identity.entropy,
    );
    return { filesWritten: header.files_written === true };
  }

  /** Asks the guest to sync its disks and power off. Resolves once the agent acknowledged. */
  async shutdown(timeoutMs = 5_000): Promise<void> {
    await this.call("shutdown", {}, undefined, { timeoutMs });
  }

  /** Mounts the workspace disk on /workspace (the agent finds it by its serial). */
  async mountWorkspace(timeoutMs = 60_000): Promise<AgentReply<"workspace.mount">> {
    return (await this.call("workspace.mount", {}, undefined, { timeoutMs })).header;
  }

  /** The guest's manifest of the tree under `path` (payload), at most `maxBytes` of it. */
  async treeManifest(path: string, maxBytes: number, timeoutMs = 600_000): Promise<{ header: AgentReply<"tree.manifest">; payload: Buffer }> {
    return this.call("tree.manifest", { path, max_bytes: maxBytes }, undefined, { timeoutMs });
  }

  /**
   * tree.manifest's records for only what changed under `path` since `sinceNs` (ns since the epoch,
   * as a decimal string: JSON numbers cannot hold it), with what the host needs to place them: the
   * root's children, a changed directory's children, and the directories above each record.
   */
  async treeChanges(path: string, sinceNs: bigint, maxBytes: number, timeoutMs = 600_000): Promise<{ header: AgentReply<"tree.changes">; payload: Buffer }> {
    return this.call("tree.changes", { path, since_ns: sinceNs.toString(), max_bytes: maxBytes }, undefined, { timeoutMs });
  }

  /**
   * Freezes the guest's /workspace filesystem (FIFREEZE: writes flushed, journal checkpointed, new
   * writes held) so its disk is a clean filesystem on the host until `thawWorkspace`. The agent
   * holds it at most `holdMs` (default and ceiling: the agent's own cap; the reply says which
   * applies), and releases it if this connection closes first.
   */
  async freezeWorkspace(options: { holdMs?: number; timeoutMs?: number } = {}): Promise<{ token: number; holdMs: number }> {
    const fields = options.holdMs === undefined ? {} : { hold_ms: options.holdMs };
    const { header } = await this.call("fs.freeze", fields, undefined, { timeoutMs: options.timeoutMs ?? 60_000 });
    return { token: header.token, holdMs: header.hold_ms };
  }

  /** Thaws the freeze `token` names; `held` says whether it was still in force (the disk unchanged since). */
  async thawWorkspace(token: number): Promise<{ held: boolean }> {
    const { header } = await this.call("fs.thaw", { token });
    return { held: header.held };
  }

  /** Starts a supervised background process; its output goes to the log paths in the reply. */
  async serviceStart(req: ServiceStartRequest): Promise<ServiceState> {
    return (await this.call("service.start", { name: req.name, cwd: req.cwd, env: req.env, ...serviceCommandFields(req.command) })).header;
  }

  async serviceStatus(name: string): Promise<ServiceState> {
    return (await this.call("service.status", { name })).header;
  }

  /** Stops a service: SIGTERM, then SIGKILL after `graceMs`. */
  async serviceStop(name: string, graceMs: number, timeoutMs?: number): Promise<ServiceState> {
    return (await this.call("service.stop", { name, grace_ms: graceMs }, undefined, { timeoutMs })).header;
  }

  async serviceList(): Promise<ServiceState[]> {
    return (await this.call("service.list")).header.services;
  }

  /** Whether something in the guest accepts TCP connections on host:port. */
  async probeTcp(host: string, port: number, timeoutMs: number): Promise<ProbeReply> {
    return (await this.call("probe.tcp", { host, port, timeout_ms: timeoutMs })).header;
  }

  /** Whether `url`, fetched from inside the guest, answers successfully. */
  async probeHttp(url: string, timeoutMs: number): Promise<ProbeReply> {
    return (await this.call("probe.http", { url, timeout_ms: timeoutMs })).header;
  }

  /** Opens a process on a PTY that lives until closed. */
  async shellOpen(req: ShellOpenRequest): Promise<ShellState> {
    return (await this.call("shell.open", { argv: req.argv, cwd: req.cwd, cols: req.cols, rows: req.rows, env: req.env })).header;
  }

  /** Up to `maxBytes` of a shell's output from `cursor` on (payload); `next_cursor` continues. */
  async shellRead(
    shellId: string,
    req: { cursor: number; maxBytes: number; waitForIdleMs?: number },
    timeoutMs?: number,
  ): Promise<{ header: ShellReadReply; payload: Buffer }> {
    const fields = { shell_id: shellId, cursor: req.cursor, max_bytes: req.maxBytes, ...(req.waitForIdleMs ? { wait_for_idle_ms: req.waitForIdleMs } : {}) };
    return this.call("shell.read", fields, undefined, { timeoutMs });
  }

  async shellWrite(shellId: string, data: Buffer): Promise<AgentReply<"shell.write">> {
    return (await this.call("shell.write", { shell_id: shellId }, data)).header;
  }

  /** Sends a signal (by name, e.g. "INT") to the shell's foreground process group. */
  async shellSignal(shellId: string, signal: string): Promise<AgentReply<"shell.signal">> {
    return (await this.call("shell.signal", { shell_id: shellId, signal })).header;
  }

  async shellClose(shellId: string): Promise<ShellState> {
    return (await this.call("shell.close", { shell_id: shellId })).header;
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface ServiceStartRequest {
  name: string;
  cwd: string;
  env: Record<string, string>;
  /** argv, or one string run by the guest's shell. */
  command: string[] | string;
}

export interface ShellOpenRequest {
  argv: string[];
  cwd: string;
  cols: number;
  rows: number;
  env: Record<string, string>;
}

export interface GuestIdentity {
  /** 1-63 letters, digits and '-'. */
  hostname: string;
  /** 32 lowercase hex digits (/etc/machine-id). */
  machineId: string;
  /** 32-512 bytes of host randomness for the guest's kernel RNG. */
  entropy: Buffer;
}

/** How service.start carries its command: an argv, or one string for the guest's shell. */
export function serviceCommandFields(command: string[] | string): { shell: string } | { argv: string[] } {
  return typeof command === "string" ? { shell: command } : { argv: command };
}

function execFields(req: ExecRequest): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    cwd: req.cwd ?? "/",
    env: req.env ?? {},
    max_output_bytes: req.maxOutputBytes ?? DEFAULT_EXEC_OUTPUT_BYTES,
  };
  if (typeof req.command === "string") fields.shell = req.command;
  else fields.argv = req.command;
  if (req.timeoutMs !== undefined) fields.timeout_ms = req.timeoutMs;
  if (req.syncAfter) fields.sync_after = true;
  return fields;
}

/** Refuses, before anything boots or runs, a command the guest protocol could not carry. */
export function checkExecRequest(req: ExecRequest): void {
  checkGuestRequest("the command with its arguments and environment", execFields(req), req.stdin === undefined ? 0 : Buffer.byteLength(req.stdin));
}

function toEntry(h: Record<string, unknown>): GuestFileEntry {
  const entry: GuestFileEntry = {
    path: String(h.path),
    type: String(h.type) as GuestFileEntry["type"],
    size: Number(h.size),
    mode: Number(h.mode),
    mtimeMs: Number(h.mtime_ms),
  };
  if (typeof h.target === "string") entry.target = h.target;
  return entry;
}
