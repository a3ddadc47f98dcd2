import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, rmSync } from "node:fs";
import { mkdir, open, rm } from "node:fs/promises";
import { PyroError } from "../../errors.js";
import { AgentClient } from "../../guest-protocol/agent-client.js";
import type { HelloInfo } from "../../guest-protocol/messages.js";
import { registerExitCleanup, shuttingDown } from "../../process/exit-cleanup.js";
import { findExecutable } from "../../process/host-command.js";
import type { Accelerator, RunningVm, VmExit, VmLaunchSpec, VmmBackend } from "../vmm-backend.js";
import { buildQemuArgs, runFiles } from "./qemu-args.js";

/** The marker /init prints when it cannot hand over to the agent: deterministic, so never retried. */
const INIT_FAILURE = /PYRO-INIT-FAILED: (.*)/;

export interface QemuBackendOptions {
  qemuBinary: string;
  accel: Accelerator;
  tscKhz: number | undefined;
}

/** QEMU microvm: PVH vmlinux, virtio-mmio block + serial devices, agent on a named virtio-serial port. */
export class QemuBackend implements VmmBackend {
  readonly name = "qemu-microvm";
  constructor(private readonly options: QemuBackendOptions) {}

  async launch(spec: VmLaunchSpec, signal?: AbortSignal): Promise<RunningVm> {
    const maxAttempts = 2;
    let lastError: PyroError | undefined;
    try {
      for (let attempt = 1; attempt <= maxAttempts; attempt++) {
        try {
          return await this.bootOnce(spec, attempt, signal);
        } catch (error) {
          if (!(error instanceof PyroError) || error.code !== "GUEST_BOOT_FAILED" || error.details.retryable !== true) throw error;
          lastError = error;
        }
      }
    } catch (error) {
      if (spec.ownsRunDir) await rm(spec.runDir, { recursive: true, force: true });
      throw error;
    }
    if (spec.ownsRunDir) await rm(spec.runDir, { recursive: true, force: true });
    throw new PyroError("GUEST_BOOT_FAILED", `${lastError!.message} (after ${maxAttempts} attempts)`, lastError!.details);
  }

  private async bootOnce(spec: VmLaunchSpec, attempt: number, signal?: AbortSignal): Promise<RunningVm> {
    signal?.throwIfAborted();
    if (shuttingDown()) throw new PyroError("CANCELLED", "pyro is shutting down");
    const files = runFiles(spec.runDir);
    await mkdir(spec.runDir, { recursive: true });
    await Promise.all([files.agentSocket, files.qmpSocket, files.console].map((f) => rm(f, { force: true })));
    const args = buildQemuArgs(spec, this.options.accel, this.options.tscKhz);
    const stderrFd = openSync(files.stderr, "w");
    let child: ChildProcess;
    const started = Date.now();
    try {
      // setpriv --pdeathsig: if pyro itself is SIGKILLed, the kernel kills the one-shot VMM too.
      const setpriv = spec.dieWithParent ? findExecutable("setpriv") : undefined;
      const [cmd, cmdArgs] = setpriv ? [setpriv, ["--pdeathsig", "KILL", "--", this.options.qemuBinary, ...args]] : [this.options.qemuBinary, args];
      child = spawn(cmd, cmdArgs, { stdio: ["ignore", "ignore", stderrFd], detached: true });
    } finally {
      closeSync(stderrFd);
    }
    const vm = new QemuVm(child, spec, this.options.accel, attempt);
    try {
      const deadline = started + spec.bootTimeoutMs;
      const agent = await Promise.race([AgentClient.connect(files.agentSocket, deadline, signal), vm.exitedEarly()]);
      agent.closeReason = () => vm.deathReason();
      const hello = await Promise.race([agent.waitReady(deadline, signal), vm.exitedEarly()]);
      vm.attach(agent, hello, Date.now() - started);
      return vm;
    } catch (error) {
      const consoleText = await vm.consoleTail(4096);
      const stderrText = await readTail(files.stderr, 2048);
      // Only this attempt's files go: the disk stays for the retry (launch() removes owned run dirs).
      await vm.terminate();
      if (signal?.aborted || shuttingDown()) throw new PyroError("CANCELLED", "boot cancelled");
      const initFailure = INIT_FAILURE.exec(consoleText)?.[1];
      if (initFailure) {
        throw new PyroError("GUEST_BOOT_FAILED", `the guest could not start: ${initFailure}`, { console: consoleText.slice(-1500), retryable: false });
      }
      const exit = vm.exitStatus;
      if (exit && exit.code !== null && exit.code !== 0 && stderrText.trim()) {
        // QEMU refused to start (bad disk path, missing kernel…): retrying cannot help.
        throw new PyroError("GUEST_BOOT_FAILED", `QEMU failed to start the VM: ${lastLine(stderrText)}`, { stderr: stderrText, retryable: false });
      }
      const why = error instanceof PyroError ? error.message : String(error);
      throw new PyroError("GUEST_BOOT_FAILED", `the guest did not boot: ${why}`, {
        console: consoleText.slice(-1500),
        stderr: stderrText,
        retryable: true,
      });
    }
  }
}

function lastLine(text: string): string {
  return text.trim().split("\n").filter(Boolean).slice(-1)[0] ?? text.trim();
}

async function readTail(path: string, maxBytes: number): Promise<string> {
  try {
    const handle = await open(path, "r");
    try {
      const { size } = await handle.stat();
      const start = Math.max(0, size - maxBytes);
      const buf = Buffer.alloc(size - start);
      await handle.read(buf, 0, buf.length, start);
      return buf.toString("utf8");
    } finally {
      await handle.close();
    }
  } catch {
    return "";
  }
}

class QemuVm implements RunningVm {
  readonly backend = "qemu-microvm";
  readonly exited: Promise<VmExit>;
  exitStatus: VmExit | undefined;
  private agentClient: AgentClient | undefined;
  private helloInfo: HelloInfo | undefined;
  private bootMsValue = 0;
  private disposed = false;
  private disposing: Promise<void> | undefined;
  private readonly unregister: () => void;

  constructor(
    private readonly child: ChildProcess,
    private readonly spec: VmLaunchSpec,
    readonly accel: Accelerator,
    readonly attempts: number,
  ) {
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, sig) => {
        this.exitStatus = { code, signal: sig };
        resolve(this.exitStatus);
      });
      child.once("error", () => {
        this.exitStatus = { code: -1, signal: null };
        resolve(this.exitStatus);
      });
    });
    this.unregister = registerExitCleanup(
      () => {
        this.killNow();
        for (const f of this.ownFiles()) rmSync(f, { recursive: true, force: true });
      },
      () => this.dispose(),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }
  get runDir(): string {
    return this.spec.runDir;
  }
  get agent(): AgentClient {
    if (!this.agentClient) throw new PyroError("GUEST_PROTOCOL", "the VM has not booted");
    return this.agentClient;
  }
  get hello(): HelloInfo {
    if (!this.helloInfo) throw new PyroError("GUEST_PROTOCOL", "the VM has not booted");
    return this.helloInfo;
  }
  get bootMs(): number {
    return this.bootMsValue;
  }

  attach(agent: AgentClient, hello: HelloInfo, bootMs: number): void {
    this.agentClient = agent;
    this.helloInfo = hello;
    this.bootMsValue = bootMs;
  }

  /** Rejects if QEMU exits before the agent is up (so boot waits do not hang on a dead VM). */
  exitedEarly(): Promise<never> {
    return this.exited.then((exit) => {
      throw new PyroError("GUEST_BOOT_FAILED", `QEMU exited during boot (${describeExit(exit)})`);
    });
  }

  /** Why the agent connection closed. The socket often closes just before QEMU's exit is reported. */
  async deathReason(): Promise<string> {
    if (this.disposed) return "the VM was stopped";
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 1_000))]);
    return this.exitStatus ? `the VM died (${describeExit(this.exitStatus)})` : "the connection to the guest agent was lost";
  }

  async consoleTail(maxBytes = 4096): Promise<string> {
    return readTail(runFiles(this.spec.runDir).console, maxBytes);
  }

  private killNow(): void {
    if (this.exitStatus || !this.child.pid) return;
    try {
      // The VMM runs in its own process group (with setpriv in front of it, when used).
      process.kill(-this.child.pid, "SIGKILL");
    } catch {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  /** What dispose removes: the VM's own files, or the whole run directory when it owns it. */
  private ownFiles(): string[] {
    const files = runFiles(this.spec.runDir);
    return this.spec.ownsRunDir ? [this.spec.runDir] : [files.agentSocket, files.qmpSocket, files.console, files.stderr];
  }

  /** Kills the VMM and removes its sockets and logs, leaving the run directory and disk in place. */
  terminate(): Promise<void> {
    return this.shutdown([runFiles(this.spec.runDir).agentSocket, runFiles(this.spec.runDir).qmpSocket, runFiles(this.spec.runDir).console, runFiles(this.spec.runDir).stderr]);
  }

  dispose(): Promise<void> {
    return this.shutdown(this.ownFiles());
  }

  private shutdown(paths: string[]): Promise<void> {
    this.disposing ??= (async () => {
      this.disposed = true;
      this.agentClient?.close();
      this.killNow();
      await this.exited;
      await Promise.all(paths.map((p) => rm(p, { recursive: true, force: true })));
      this.unregister();
    })();
    return this.disposing;
  }
}

function describeExit(exit: VmExit): string {
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}
