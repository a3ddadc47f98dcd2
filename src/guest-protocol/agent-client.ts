import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { PyroError } from "../errors.js";
import { encodeFrame, FrameDecoder } from "./frame-codec.js";
import { checkGuestRequest } from "./request-limits.js";
import type { ExecRequest, GuestExecResult, GuestFileEntry, HelloInfo } from "./messages.js";

export const PROTOCOL_VERSION = 1;

interface Pending {
  resolve: (reply: { header: Record<string, unknown>; payload: Buffer }) => void;
  reject: (error: Error) => void;
  timer?: NodeJS.Timeout;
  op: string;
}

export interface RequestOptions {
  /** Give up waiting for the reply after this long (the guest may still be working). */
  timeoutMs?: number;
}

/** Talks to the in-guest agent over the unix socket QEMU exposes for the virtio-serial port. */
export class AgentClient {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: PyroError | undefined;
  private readyWaiters: Array<() => void> = [];
  private sawReady = false;
  /** Explains why the channel closed (e.g. "the VM died"); set by the VM owner. */
  closeReason: () => Promise<string> = async () => "the guest agent connection closed";

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined); // 'close' follows and fails what is pending
    socket.on("close", () => {
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
        return new AgentClient(socket);
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

  private onData(chunk: Buffer): void {
    this.decoder.push(chunk);
    for (let item = this.decoder.next(); item; item = this.decoder.next()) {
      if (item.kind === "garbage") continue; // the agent never sends garbage; a partial frame after reconnect is harmless
      const id = typeof item.header.id === "number" ? item.header.id : -1;
      if (id === 0) {
        if (item.header.event === "ready") this.markReady();
        continue;
      }
      const waiter = this.pending.get(id);
      if (!waiter) continue; // duplicate answer to a retried hello
      this.pending.delete(id);
      if (waiter.timer) clearTimeout(waiter.timer);
      if (item.header.ok === true) {
        waiter.resolve({ header: item.header, payload: item.payload });
      } else {
        const err = (item.header.error ?? {}) as { code?: string; message?: string };
        waiter.reject(
          new PyroError(
            // The agent refuses a /workspace path that a guest symlink leads elsewhere: the same refusal as a path outside it.
            err.code === "outside_workspace" ? "PATH_OUTSIDE_WORKSPACE" : "GUEST_OPERATION_FAILED",
            `guest ${waiter.op} failed: ${err.message ?? "unknown error"}`,
            { guestCode: err.code ?? "unknown" },
          ),
        );
      }
    }
  }

  private markReady(): void {
    this.sawReady = true;
    for (const w of this.readyWaiters.splice(0)) w();
  }

  private failAll(error: PyroError): void {
    this.closedError ??= error;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      p.reject(this.closedError);
    }
    for (const w of this.readyWaiters.splice(0)) w();
  }

  /** Sends one request and waits for its reply. */
  request(op: string, fields: Record<string, unknown> = {}, payload?: Buffer, options: RequestOptions = {}): Promise<{ header: Record<string, unknown>; payload: Buffer }> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const header = { ...fields, id, op };
    try {
      checkGuestRequest(`the guest ${op} request`, header, payload?.length);
    } catch (error) {
      return Promise.reject(error as Error);
    }
    const frame = encodeFrame(header, payload);
    return new Promise((resolve, reject) => {
      const entry: Pending = { resolve, reject, op };
      if (options.timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new PyroError("GUEST_PROTOCOL", `the guest agent did not answer ${op} within ${options.timeoutMs} ms`));
        }, options.timeoutMs);
      }
      this.pending.set(id, entry);
      this.socket.write(frame);
    });
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
        return await this.hello(Math.min(remaining, this.sawReady ? 2_000 : 500));
      } catch (error) {
        if (error instanceof PyroError && error.code === "GUEST_PROTOCOL") continue;
        throw error;
      }
    }
    throw this.closedError;
  }

  async hello(timeoutMs = 5_000): Promise<HelloInfo> {
    const { header } = await this.request("hello", { host_time_ms: Date.now() }, undefined, { timeoutMs });
    const protocol = Number(header.protocol);
    if (protocol !== PROTOCOL_VERSION) {
      throw new PyroError("GUEST_PROTOCOL", `guest agent speaks protocol ${protocol}, pyro speaks ${PROTOCOL_VERSION}; rebuild the agent (scripts/setup.sh)`);
    }
    return { protocol, agentVersion: String(header.agent_version), bootMs: Number(header.boot_ms), uptimeMs: Number(header.uptime_ms) };
  }

  /** Runs a command in the guest. The guest enforces `timeoutMs`; the host waits a little longer. */
  async exec(req: ExecRequest): Promise<GuestExecResult> {
    const stdin = req.stdin === undefined ? undefined : Buffer.from(req.stdin);
    const hostTimeout = req.timeoutMs !== undefined ? req.timeoutMs + 15_000 : undefined;
    const { header: h, payload } = await this.request("exec", execFields(req), stdin, { timeoutMs: hostTimeout });
    const outLen = Number(h.stdout_len);
    const errLen = Number(h.stderr_len);
    if (outLen + errLen !== payload.length) throw new PyroError("GUEST_PROTOCOL", "exec reply payload does not match its declared lengths");
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
    const { header, payload } = await this.request("file.read", { path, offset: options.offset ?? 0, max_bytes: options.maxBytes ?? 1 << 20 });
    return { data: payload, size: Number(header.size), truncated: header.truncated === true };
  }

  async writeFile(path: string, data: Buffer | string, options: { mode?: number; append?: boolean } = {}): Promise<void> {
    await this.request("file.write", { path, mode: options.mode ?? 0o644, append: options.append ?? false, mkdirs: true }, Buffer.from(data));
  }

  async stat(path: string): Promise<GuestFileEntry> {
    const { header } = await this.request("file.stat", { path });
    return toEntry(header);
  }

  async list(path: string, options: { recursive?: boolean; maxEntries?: number } = {}): Promise<{ entries: GuestFileEntry[]; truncated: boolean }> {
    const { header } = await this.request("file.list", { path, recursive: options.recursive ?? false, max_entries: options.maxEntries ?? 10_000 });
    const entries = Array.isArray(header.entries) ? header.entries.map((e) => toEntry(e as Record<string, unknown>)) : [];
    return { entries, truncated: header.truncated === true };
  }

  /** Flushes the guest's page cache to its virtual disk: what was written survives a killed VMM. */
  async sync(): Promise<void> {
    await this.request("sync", {}, undefined, { timeoutMs: 60_000 });
  }

  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.request("file.remove", { path, recursive: options.recursive ?? false });
  }

  /**
   * Unpacks a tar already staged in the guest into `dest`, every entry created beneath `dest` by the
   * agent (links already in the guest are never written through).
   */
  async extractArchive(archive: string, dest: string): Promise<void> {
    await this.request("file.extract", { archive, path: dest }, undefined, { timeoutMs: 600_000 });
  }

  async mkdir(path: string): Promise<void> {
    await this.request("file.mkdir", { path });
  }

  /** Asks the guest to sync its disks and power off. Resolves once the agent acknowledged. */
  async shutdown(timeoutMs = 5_000): Promise<void> {
    await this.request("shutdown", {}, undefined, { timeoutMs });
  }

  close(): void {
    this.socket.destroy();
  }
}

function execFields(req: ExecRequest): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    cwd: req.cwd ?? "/",
    env: req.env ?? {},
    max_output_bytes: req.maxOutputBytes ?? 1 << 20,
  };
  if (typeof req.command === "string") fields.shell = req.command;
  else fields.argv = req.command;
  if (req.timeoutMs !== undefined) fields.timeout_ms = req.timeoutMs;
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
