/**
 * How many guest connections the egress proxies may hold open: per VM, and in total across every
 * VM sharing a runtime directory (one user's pyro on this host). Each open guest connection costs
 * the host one small forwarder process plus sockets, so both numbers bound host memory.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { processAlive } from "../process/process-alive.js";

/** Defaults: 32 covers npm (15 sockets) or pip (10) with room; 128 is four busy workspaces. */
export const EGRESS_CONNECTION_LIMITS = { perVm: 32, host: 128 } as const;

/** Text every egress server's command line carries, so a reused pid is not taken for one. */
export const EGRESS_SERVER_MARK = "egress-server";

export type Admission = { admitted: true; release: () => void } | { admitted: false; reason: string };

/**
 * One egress server's share of the limits. The host-wide count is the sum of small files, one per
 * live server (`<countDir>/<pid>` holding its open count): a crashed server's file is ignored and
 * removed once its pid is gone, so a crash never leaks capacity. Two servers admitting at the same
 * instant may each miss the other's newest connection; the overshoot is at most one per server.
 */
export class ConnectionBudget {
  private open = 0;
  private readonly ownFile: string;

  constructor(
    private readonly countDir: string,
    private readonly perVm: number,
    private readonly host: number,
  ) {
    mkdirSync(countDir, { recursive: true, mode: 0o700 });
    this.ownFile = join(countDir, String(process.pid));
    this.publish();
  }

  /** Takes a connection slot, or says which limit refuses it. */
  admit(): Admission {
    if (this.open >= this.perVm) {
      return {
        admitted: false,
        reason: `this VM already has ${this.open} open connections through the egress proxy (the limit is ${this.perVm}); close idle ones and retry`,
      };
    }
    const total = this.open + this.othersOpen();
    if (total >= this.host) {
      return { admitted: false, reason: `pyro's VMs on this host already hold ${total} egress connections (the host-wide limit is ${this.host}); retry later` };
    }
    this.open++;
    this.publish();
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.open--;
        this.publish();
      },
    };
  }

  /** Removes this server's count (on exit). */
  dispose(): void {
    rmSync(this.ownFile, { force: true });
  }

  private othersOpen(): number {
    let sum = 0;
    for (const name of readdirSync(this.countDir)) {
      if (!/^[0-9]{1,10}$/.test(name) || Number(name) === process.pid) continue;
      const pid = Number(name);
      const cmdline = processAlive(pid) ? readFileOr(`/proc/${pid}/cmdline`) : "";
      if (!cmdline.includes(EGRESS_SERVER_MARK)) {
        rmSync(join(this.countDir, name), { force: true }); // a server that died without cleaning up
        continue;
      }
      const count = Number(readFileOr(join(this.countDir, name)).trim());
      if (Number.isSafeInteger(count) && count > 0) sum += count;
    }
    return sum;
  }

  private publish(): void {
    const tmp = `${this.ownFile}.tmp`;
    writeFileSync(tmp, `${this.open}\n`, { mode: 0o600 });
    renameSync(tmp, this.ownFile);
  }
}

function readFileOr(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
