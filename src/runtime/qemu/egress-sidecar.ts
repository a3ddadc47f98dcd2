import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { PyroError } from "../../errors.js";
import { runFiles } from "./qemu-args.js";

/**
 * The VM's egress server, started beside its VMM. Nobody has to stop it: it holds a connection to
 * the VMM's lifeline socket and exits when that connection ends, so it lives exactly as long as the
 * VMM — detached workspace VMs included, with no pyro process around. `abandon()` is only for a
 * VMM that never started (the server would otherwise wait out its lifeline deadline).
 */
export class EgressSidecar {
  private constructor(
    readonly pid: number,
    readonly ready: Promise<void>,
  ) {}

  /**
   * Spawns `argv` for the VM in `runDir`, writing `input` (if any) to its stdin; `ready` settles
   * when it listens, or rejects by `deadline`.
   */
  static start(argv: string[], runDir: string, deadline: number, input?: Buffer): EgressSidecar {
    const files = runFiles(runDir);
    const logFd = openSync(files.egressLog, "a", 0o600);
    const [command, ...args] = argv;
    let child;
    try {
      // Own session, so a terminal's ^C to pyro does not reach a server whose VM outlives pyro.
      child = spawn(command!, [...args, `--listen=${files.egressSocket}`, `--lifeline=${files.egressLifeline}`], {
        stdio: [input ? "pipe" : "ignore", "pipe", logFd],
        detached: true,
      });
      if (input) {
        child.stdin!.on("error", () => undefined); // a server that died early is reported below
        child.stdin!.end(input);
      }
    } finally {
      closeSync(logFd);
    }
    const ready = new Promise<void>((resolve, reject) => {
      let seen = "";
      const fail = (why: string) => {
        clearTimeout(timer);
        reject(new PyroError("GUEST_BOOT_FAILED", `the egress proxy did not start: ${why} (log: ${files.egressLog})`, { retryable: false }));
      };
      const timer = setTimeout(() => fail("no answer in time"), Math.max(0, deadline - Date.now()));
      child.once("error", (error) => fail(error.message));
      child.once("exit", (code, signal) => fail(`it exited (${signal ?? `code ${code}`})`));
      child.stdout!.on("data", (chunk: Buffer) => {
        seen += chunk.toString("utf8");
        if (!seen.includes("ready\n")) return;
        clearTimeout(timer);
        // From here on it belongs to the VMM's lifetime, not to this process.
        child.removeAllListeners("exit");
        child.stdout!.destroy();
        child.unref();
        resolve();
      });
    });
    ready.catch(() => undefined); // observed by whoever awaits it; never an unhandled rejection
    return new EgressSidecar(child.pid ?? -1, ready);
  }

  /** Kills the server when its VMM never came up. */
  abandon(): void {
    if (this.pid <= 0) return;
    try {
      process.kill(this.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
