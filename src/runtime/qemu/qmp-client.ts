import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { PyroError } from "../../errors.js";

/** An asynchronous QMP message: `{"event": …, "data": …}`. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

/** Minimal QMP (QEMU Machine Protocol) client: newline-delimited JSON over the VM's QMP socket. */
export class QmpClient {
  private buffer = "";
  private waiters: Array<{ resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];
  private eventWaiters: Array<{ matches: (event: QmpEvent) => boolean; resolve: (event: QmpEvent) => void; reject: (e: Error) => void }> = [];
  private closed: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      for (let nl = this.buffer.indexOf("\n"); nl >= 0; nl = this.buffer.indexOf("\n")) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if ("event" in msg) {
          // Asynchronous events: handed to whoever waits for one, dropped otherwise.
          const event = { event: String(msg.event), data: (msg.data ?? {}) as Record<string, unknown> };
          const waiter = this.eventWaiters.find((w) => w.matches(event));
          if (waiter) {
            this.eventWaiters.splice(this.eventWaiters.indexOf(waiter), 1);
            waiter.resolve(event);
          }
          continue;
        }
        this.waiters.shift()?.resolve(msg);
      }
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.closed = new PyroError("VM_DIED", "the QEMU monitor connection closed");
      for (const w of [...this.waiters.splice(0), ...this.eventWaiters.splice(0)]) w.reject(this.closed);
    });
  }

  /** Connects (retrying while QEMU creates the socket), reads the greeting, enables commands. */
  static async connect(path: string, deadline: number): Promise<QmpClient> {
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        const client = new QmpClient(socket);
        await client.next(); // greeting
        await client.execute("qmp_capabilities");
        return client;
      } catch (error) {
        if (Date.now() > deadline) throw new PyroError("VM_DIED", `cannot reach the QEMU monitor at ${path}: ${(error as Error).message}`);
        await sleep(5);
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Runs one command; QMP errors become PyroErrors. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
    const msg = await reply;
    if (msg.error) {
      const err = msg.error as { desc?: string };
      throw new PyroError("GUEST_OPERATION_FAILED", `QEMU ${command} failed: ${err.desc ?? "unknown error"}`);
    }
    return msg.return;
  }

  /**
   * The next event `matches` accepts, from now on (register before the command that causes it).
   * Rejects when the connection closes or at `deadline`.
   */
  nextEvent(matches: (event: QmpEvent) => boolean, deadline: number): Promise<QmpEvent> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => {
          this.eventWaiters = this.eventWaiters.filter((w) => w !== waiter);
          reject(new PyroError("GUEST_OPERATION_FAILED", "QEMU did not send the awaited event in time"));
        },
        Math.max(0, deadline - Date.now()),
      );
      const waiter = {
        matches,
        resolve: (event: QmpEvent) => {
          clearTimeout(timer);
          resolve(event);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.eventWaiters.push(waiter);
    });
  }

  /** Polls query-migrate until the migration completes (or fails). */
  async waitForMigration(deadline: number): Promise<void> {
    for (;;) {
      const status = (await this.execute("query-migrate")) as { status?: string; "error-desc"?: string };
      if (status.status === "completed") return;
      if (status.status === "failed" || status.status === "cancelled") {
        throw new PyroError("GUEST_OPERATION_FAILED", `VM state transfer ${status.status}: ${status["error-desc"] ?? "no details"}`);
      }
      if (Date.now() > deadline) throw new PyroError("GUEST_OPERATION_FAILED", `VM state transfer did not finish (status ${status.status ?? "unknown"})`);
      await sleep(5);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
