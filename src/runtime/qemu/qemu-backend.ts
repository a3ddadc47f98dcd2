import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { basename, dirname, normalize } from "node:path";
import { isPyroError, PyroError } from "../../errors.js";
import { AgentClient } from "../../guest-protocol/agent-client.js";
import type { HelloInfo } from "../../guest-protocol/messages.js";
import { registerExitCleanup, shuttingDown } from "../../process/exit-cleanup.js";
import { findExecutable, requireExecutable } from "../../process/host-command.js";
import { processAlive } from "../../process/process-alive.js";
import { processStartTime } from "../../process/process-identity.js";
import type { Accelerator, RunningVm, SavedMemory, SaveStateOptions, VmExit, VmHandle, VmLaunchSpec, VmmBackend, VmProcessRef } from "../vmm-backend.js";
import { EgressSidecar } from "./egress-sidecar.js";
import { buildQemuArgs, CONSOLE_CHARDEV_ID, CONSOLE_RING_BYTES, DEVICE_STATE_FD, DEVICE_STATE_URI, runFiles } from "./qemu-args.js";
import { ensurePrivateDir, PRIVATE_FILE_MODE, withPrivateUmask } from "../../storage/private-storage.js";
import { shellQuote } from "../../process/shell-quote.js";
import { QmpClient } from "./qmp-client.js";
import { saveDeviceState } from "./device-state.js";
import { captureMappedRam } from "./ram-capture.js";
import { privateRamDiscardEnv } from "./private-ram-discard.js";

/** The marker /init prints when it cannot hand over to the agent: deterministic, so never retried. */
const INIT_FAILURE = /PYRO-INIT-FAILED: (.*)/;
/** QEMU run states a VM is left in by a state save (stop + migrate) that nobody finished. */
const SAVE_LEFT_PAUSED = new Set(["paused", "finish-migrate", "postmigrate"]);
/** Migration is throttled by default; saving a guest is 5x faster unthrottled (runtime-facts G9). */
const MIGRATION_BANDWIDTH = 20 * 1024 ** 3;

export interface QemuBackendOptions {
  qemuBinary: string;
  accel: Accelerator;
  tscKhz: number | undefined;
  /** host/private-ram-discard's library: lets copy-on-write RAM files have free page reporting (see private-ram-discard.ts). */
  privateRamDiscard?: string;
}

/** QEMU microvm: PVH vmlinux, virtio-mmio block + serial devices, agent on a named virtio-serial port. */
export class QemuBackend implements VmmBackend {
  readonly name = "qemu-microvm";
  constructor(private readonly options: QemuBackendOptions) {}

  async launch(spec: VmLaunchSpec, signal?: AbortSignal): Promise<RunningVm> {
    const maxAttempts = spec.incomingState ? 1 : 2;
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
    const suffix = maxAttempts > 1 ? ` (after ${maxAttempts} attempts)` : "";
    throw new PyroError("GUEST_BOOT_FAILED", `${lastError!.message}${suffix}`, lastError!.details);
  }

  private async bootOnce(spec: VmLaunchSpec, attempt: number, signal?: AbortSignal): Promise<RunningVm> {
    signal?.throwIfAborted();
    if (shuttingDown()) throw new PyroError("CANCELLED", "pyro is shutting down");
    const files = runFiles(spec.runDir);
    // The agent socket is the guest's only channel: it must live where no other user can reach it.
    await ensurePrivateDir(dirname(spec.runDir));
    await ensurePrivateDir(spec.runDir);
    await Promise.all([files.agentSocket, files.qmpSocket, files.console, files.stderr].map((f) => rm(f, { force: true })));
    const network = spec.network;
    const args = buildQemuArgs(spec, this.options.accel, this.options.tscKhz, network === "none" ? undefined : requireExecutable("socat", "socat"));
    const started = Date.now();
    const deadline = started + spec.bootTimeoutMs;
    // The egress server starts alongside QEMU and follows it out through its lifeline socket.
    const egress = network === "none" ? undefined : EgressSidecar.start(network.egressServer, spec.runDir, deadline, network.egressInput);
    const env =
      spec.freePageReporting && spec.memoryFile && !spec.memoryFile.share
        ? { ...process.env, ...(await privateRamDiscardEnv(this.options.privateRamDiscard, spec.memoryFile.path)) }
        : undefined;
    const stderrFd = openSync(files.stderr, "w", PRIVATE_FILE_MODE);
    let stateFd: number | undefined;
    let child: ChildProcess;
    try {
      stateFd = spec.incomingState && spec.memoryFile ? openSync(spec.incomingState, "r") : undefined;
      const stdio: ("ignore" | number)[] = ["ignore", "ignore", stderrFd];
      if (stateFd !== undefined) stdio[DEVICE_STATE_FD] = stateFd;
      // setpriv --pdeathsig: if pyro itself is SIGKILLed, the kernel kills the one-shot VMM too.
      const setpriv = spec.dieWithParent ? findExecutable("setpriv") : undefined;
      const [cmd, cmdArgs] = setpriv ? [setpriv, ["--pdeathsig", "KILL", "--", this.options.qemuBinary, ...args]] : [this.options.qemuBinary, args];
      // QEMU creates its sockets, console log and (through `migrate exec:cat >`) memory images itself.
      child = withPrivateUmask(() => spawn(cmd, cmdArgs, { stdio, detached: true, ...(env ? { env } : {}) }));
    } catch (error) {
      egress?.abandon();
      throw error;
    } finally {
      closeSync(stderrFd);
      if (stateFd !== undefined) closeSync(stateFd);
    }
    const vm = new QemuVm(spec.runDir, this.options.accel, attempt, { child, ownsRunDir: spec.ownsRunDir });
    try {
      if (spec.incomingState) {
        const qmp = await Promise.race([QmpClient.connect(files.qmpSocket, deadline), vm.exitedEarly()]);
        try {
          if (spec.memoryFile) await loadDeviceState(qmp, deadline, vm);
          else await Promise.race([qmp.waitForMigration(deadline), vm.exitedEarly()]);
          // A restored guest may use the network at once: the proxy listens before it runs.
          if (egress) await egress.ready;
          // A restored guest runs whatever it ran when saved: no byte of it reaches the file. Sent
          // together (QEMU runs them in order): each monitor round trip costs a restore time.
          await Promise.all([boundConsole(qmp), qmp.execute("cont")]);
        } finally {
          qmp.close();
        }
      }
      const agent = await Promise.race([AgentClient.connect(files.agentSocket, deadline, signal), vm.exitedEarly()]);
      const hello = await Promise.race([agent.waitReady(deadline, signal), vm.exitedEarly()]);
      if (!spec.incomingState) {
        // Until the agent answered, only the kernel, /init and the agent wrote to the console.
        const qmp = await Promise.race([QmpClient.connect(files.qmpSocket, deadline), vm.exitedEarly()]);
        try {
          await boundConsole(qmp);
        } finally {
          qmp.close();
        }
      }
      if (egress) await egress.ready;
      vm.attachAgent(agent, hello, Date.now() - started);
      return vm;
    } catch (error) {
      const consoleText = await vm.consoleTail(4096);
      const stderrText = await readTail(files.stderr, 2048);
      // Only this attempt's files go: the disk stays for the retry (launch() removes owned run dirs).
      await vm.terminate();
      egress?.abandon();
      if (signal?.aborted || shuttingDown()) throw new PyroError("CANCELLED", "boot cancelled");
      if (isPyroError(error) && error.details.retryable === false) throw error;
      const initFailure = INIT_FAILURE.exec(consoleText)?.[1];
      if (initFailure) {
        throw new PyroError("GUEST_BOOT_FAILED", `the guest could not start: ${initFailure}`, { console: consoleText.slice(-1500), retryable: false });
      }
      const exit = vm.exitStatus;
      if (exit && exit.code !== null && exit.code !== 0 && stderrText.trim()) {
        // QEMU refused to start (bad disk path, missing kernel, incompatible saved state…): retrying cannot help.
        throw new PyroError("GUEST_BOOT_FAILED", `QEMU failed to start the VM: ${lastLine(stderrText)}`, { stderr: stderrText, retryable: false });
      }
      const why = error instanceof PyroError ? error.message : String(error);
      throw new PyroError("GUEST_BOOT_FAILED", `the guest did not ${spec.incomingState ? "resume" : "boot"}: ${why}`, {
        console: consoleText.slice(-1500),
        stderr: stderrText,
        retryable: true,
      });
    }
  }

  /** Data is safe either way: every pyro operation that writes syncs the guest first. */
  async stop(vm: RunningVm, graceMs = 10_000): Promise<void> {
    try {
      await vm.agent.shutdown(5_000);
    } catch {
      // The guest is going away either way.
    }
    let timer: NodeJS.Timeout | undefined;
    // A ref'd timer: the exit watch alone would not keep this process alive while it waits.
    await Promise.race([vm.exited, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    await this.kill(vm.detach());
  }

  async isRunning(handle: VmProcessRef): Promise<boolean> {
    return runningCommandLine(handle) !== undefined;
  }

  async kill(handle: VmProcessRef): Promise<void> {
    await (await this.killInBackground(handle)).gone;
    await rm(handle.runDir, { recursive: true, force: true });
  }

  async killInBackground(handle: VmProcessRef): Promise<{ gone: Promise<void> }> {
    const commandLine = runningCommandLine(handle);
    const ours = commandLine !== undefined;
    // Read before the kill: the RAM file this VM mapped copy-on-write grew with every page it touched.
    const mapped = commandLine && copyOnWriteMemoryIn(commandLine)?.path;
    if (ours) {
      try {
        process.kill(handle.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    const gone = waitUntilGone(handle, ours);
    gone.catch(() => undefined); // awaited by the caller later; not an unhandled rejection meanwhile
    if (mapped)
      void gone.then(
        () => releaseZeroPagesOf(mapped, { unlessChangedWithinMs: ZERO_PAGE_RELEASE_INTERVAL_MS }),
        () => undefined,
      );
    return { gone };
  }

  async memoryFilesInUse(): Promise<Set<string>> {
    const files = new Set<string>();
    for (const entry of procEntries()) {
      if (!/^\d+$/.test(entry) || !ownedByUs(Number(entry))) continue;
      const args = readCmdlineSync(Number(entry)).split("\0");
      if (basename(args[0] ?? "") !== basename(this.options.qemuBinary)) continue;
      for (const arg of args) {
        const file = memoryBackendFile(arg);
        if (file) files.add(file.path);
      }
    }
    return files;
  }

  async findVms(runRoot: string): Promise<VmProcessRef[]> {
    const found: VmProcessRef[] = [];
    // Synchronous reads: /proc answers from memory, and ~100 async reads cost 10x more in the thread pool.
    for (const entry of procEntries()) {
      if (!/^\d+$/.test(entry)) continue;
      const args = readCmdlineSync(Number(entry)).split("\0");
      // The agent socket names the run directory: <runDir>/agent.sock, in the -chardev argument.
      if (args[0] !== this.options.qemuBinary && basename(args[0] ?? "") !== basename(this.options.qemuBinary)) continue;
      // Another local user can start a process whose argv looks like one of our VMs: only ours count.
      if (!ownedByUs(Number(entry))) continue;
      for (const arg of args) {
        const match = /(?:^|,)path=([^,]+)\/agent\.sock(?:,|$)/.exec(arg);
        if (match && isDirectChild(match[1]!, runRoot)) {
          found.push({ pid: Number(entry), runDir: match[1]! });
          break;
        }
      }
    }
    return found;
  }

  async resumeIfPaused(handle: VmProcessRef): Promise<boolean> {
    const qmp = await QmpClient.connect(runFiles(handle.runDir).qmpSocket, Date.now() + 10_000);
    try {
      const { status } = (await qmp.execute("query-status")) as { status: string };
      // Only the states a save leaves behind; others (shutdown, panicked) are not ours to resume.
      if (!SAVE_LEFT_PAUSED.has(status)) return false;
      const migration = (await qmp.execute("query-migrate")) as { status?: string };
      if (migration.status && !["completed", "failed", "cancelled"].includes(migration.status)) {
        await qmp.execute("migrate_cancel");
        await qmp.waitForMigration(Date.now() + 30_000).catch(() => undefined);
      }
      await qmp.execute("cont");
      return true;
    } finally {
      qmp.close();
    }
  }

  async attach(handle: VmHandle, timeoutMs = 30_000): Promise<RunningVm> {
    if (!(await this.isRunning(handle))) throw new PyroError("VM_DIED", `the VM (pid ${handle.pid}) is not running`);
    const vm = new QemuVm(handle.runDir, handle.accel, 1, { pid: handle.pid, ownsRunDir: false, ...(handle.startTime ? { startTime: handle.startTime } : {}) });
    const deadline = Date.now() + timeoutMs;
    const started = Date.now();
    const agent = await AgentClient.connect(runFiles(handle.runDir).agentSocket, deadline);
    try {
      const hello = await agent.waitReady(deadline);
      vm.attachAgent(agent, hello, Date.now() - started);
      return vm;
    } catch (error) {
      agent.close();
      throw error;
    }
  }
}

/**
 * Waits (up to 10 s) for a VMM sent SIGKILL to exit. A process still naming the run directory
 * afterwards (ours that would not die, or another user's posing as ours) may be using it: that is
 * an error, and the directory must stay.
 */
async function waitUntilGone(handle: VmProcessRef, ours: boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  // Polled finely: QEMU exits in a few ms, and callers wait on this.
  while (ours && processAlive(handle.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  if (processAlive(handle.pid) && namesRunDir(handle.pid, handle.runDir)) {
    throw new PyroError(
      "VM_DIED",
      `process ${handle.pid} still names the run directory ${handle.runDir}${ours ? " after SIGKILL" : " and is not ours"}; left the directory in place`,
    );
  }
}

/** Whether /proc/<pid> belongs to our uid (false once the process is gone). */
function ownedByUs(pid: number): boolean {
  try {
    return statSync(`/proc/${pid}`).uid === process.getuid!();
  } catch {
    return false;
  }
}

/** `<root>/<name>` exactly: no `..`, `.`, doubled or trailing slashes that would name the root, its parent or deeper. */
function isDirectChild(path: string, root: string): boolean {
  const name = basename(path);
  return normalize(path) === path && dirname(path) === root && name !== ".." && name !== "." && name !== "";
}

function procEntries(): string[] {
  try {
    return readdirSync("/proc");
  } catch {
    return [];
  }
}

function readCmdlineSync(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

/** Whether the process under `pid` is a VMM serving `runDir` (its agent socket is on its command line). */
function namesRunDir(pid: number, runDir: string): boolean {
  return servesRunDir(readCmdlineSync(pid).split("\0"), runDir);
}

function servesRunDir(args: string[], runDir: string): boolean {
  const socket = runFiles(runDir).agentSocket;
  return args.some((arg) => arg.includes(socket));
}

/**
 * x-ignore-shared leaves RAM mapped from a shared file out of a migration stream. Both ends of a
 * stream must agree on it (it changes the stream's format), so every save sets it explicitly: a VM
 * restored with it on keeps it on until told otherwise.
 */
async function setIgnoreShared(qmp: QmpClient, on: boolean): Promise<void> {
  await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: on }] });
}

/**
 * The command line of the VM `handle` names, if it still runs. Pids are reused: the process must be
 * ours, the one that started when the handle says, and a VMM serving this run directory. /proc is
 * read in line: every command on a workspace asks, and the thread pool's four round trips per read
 * cost more than the read.
 */
function runningCommandLine(handle: VmProcessRef): string[] | undefined {
  if (!processAlive(handle.pid) || !ownedByUs(handle.pid)) return undefined;
  if (handle.startTime !== undefined && processStartTime(handle.pid) !== handle.startTime) return undefined;
  const args = readCmdlineSync(handle.pid).split("\0");
  return servesRunDir(args, handle.runDir) ? args : undefined;
}

/** A `-object memory-backend-file,…` argument's file, size and sharing (qemu-args.ts writes it). */
function memoryBackendFile(arg: string): { path: string; bytes: number; share: boolean } | undefined {
  if (!arg.startsWith("memory-backend-file,")) return undefined;
  const path = /(?:^|,)mem-path=([^,]+)/.exec(arg)?.[1];
  const mib = /(?:^|,)size=(\d+)M(?:,|$)/.exec(arg)?.[1];
  if (!path || !mib) return undefined;
  return { path, bytes: Number(mib) * 1024 * 1024, share: /(?:^|,)share=on(?:,|$)/.test(arg) };
}

/** The RAM file a VM maps copy-on-write (a template, fork or snapshot restore), read from its command line. */
async function copyOnWriteMemory(pid: number): Promise<{ path: string; bytes: number } | undefined> {
  return copyOnWriteMemoryIn(readCmdlineSync(pid).split("\0"));
}

/** The RAM file a VMM's arguments map copy-on-write, if any. */
function copyOnWriteMemoryIn(args: string[]): { path: string; bytes: number } | undefined {
  for (const arg of args) {
    const file = memoryBackendFile(arg);
    if (file && !file.share) return file;
  }
  return undefined;
}

async function copyOnWriteMemoryFile(pid: number): Promise<string | undefined> {
  return (await copyOnWriteMemory(pid))?.path;
}

/**
 * The shortest time between two zero-page releases of one RAM file after VMs exit: each scans the
 * file's data (~50–200 ms of CPU for a template), and a burst of exits (a reset loop, a test run)
 * needs one scan, not one each.
 */
export const ZERO_PAGE_RELEASE_INTERVAL_MS = 5_000;
const ZERO_PAGE_RELEASE_PASSES = 6;

/**
 * Any fault on a page of a copy-on-write tmpfs mapping that the file holds as a hole, a read or
 * a write, first allocates that page, as zeros, in the shared file (the kernel fills the hole
 * before copying): every VM that maps a template grows the template by every page its guest
 * touches, up to the whole guest size, and a full save (which reads every page) does it at once.
 * Punching the all-zero blocks out again keeps the file as small as its real content. Safe while
 * VMs map it: nothing writes these files once made (templates, forks and snapshots are mapped
 * share=off), so a block read as zeros is zeros; a VM reads the same zeros from a hole, and the
 * pages it wrote are private copies a punch never touches. In the background, at the lowest
 * priority: it scans the file. With `unlessChangedWithinMs`, skipped when the file changed (was
 * made or punched) that recently.
 */
function releaseZeroPagesOf(memoryFile: string | undefined, options: { unlessChangedWithinMs?: number } = {}): void {
  const fallocate = memoryFile ? findExecutable("fallocate") : undefined;
  if (!fallocate || !memoryFile) return;
  if (options.unlessChangedWithinMs !== undefined) {
    const changed = statSync(memoryFile, { throwIfNoEntry: false })?.ctimeMs;
    if (changed === undefined || Date.now() - changed < options.unlessChangedWithinMs) return;
  }
  // util-linux's --dig-holes (2.38) leaves some zero blocks behind in each pass (a 378 MiB template
  // file with 84 MiB of content took four passes: 182, 111, 85, 85 MiB): it is repeated until the
  // file's allocated blocks stop falling, at most ZERO_PAGE_RELEASE_PASSES times.
  const passes = `prev=; i=0; while [ $i -lt ${ZERO_PAGE_RELEASE_PASSES} ]; do "$1" --dig-holes "$2" || exit; now=$(stat -c %b "$2") || exit; [ "$now" = "$prev" ] && exit; prev=$now; i=$((i+1)); done`;
  const script = ["/bin/sh", "-c", passes, "sh", fallocate, memoryFile];
  const nice = findExecutable("nice");
  const [command, ...args] = nice ? [nice, "-n", "19", ...script] : script;
  const child = spawn(command!, args, { stdio: "ignore", detached: true });
  child.on("error", () => undefined);
  child.unref();
}

/** Where a migration ends; `completed` is announced only once the VM's run state is set. */
const MIGRATION_ENDED = new Set(["completed", "failed", "cancelled"]);

/**
 * Loads a device-only state (handed to QEMU as DEVICE_STATE_FD) into a VM started with `-incoming
 * defer` whose RAM is a mapped file (runtime-facts §5): x-ignore-shared on, then `migrate-incoming`.
 * The commands go out together and the end is awaited as QEMU's MIGRATION event (the `events`
 * capability; only x-ignore-shared is checked against a saved stream), not polled: while a restore
 * starts, QEMU's main loop is busy and each monitor round trip costs milliseconds.
 */
async function loadDeviceState(qmp: QmpClient, deadline: number, vm: QemuVm): Promise<void> {
  const ended = qmp.nextEvent((e) => e.event === "MIGRATION" && MIGRATION_ENDED.has(String(e.data.status)), deadline);
  ended.catch(() => undefined); // raced below; a rejection after the race is not unhandled
  await Promise.all([
    qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "x-ignore-shared", state: true },
        { capability: "events", state: true },
      ],
    }),
    qmp.execute("migrate-incoming", { uri: DEVICE_STATE_URI }),
  ]);
  const { data } = await Promise.race([ended, vm.exitedEarly()]);
  // Failed: query-migrate says why.
  if (data.status !== "completed") await qmp.waitForMigration(deadline);
}

/** Moves the guest console from its boot file to a fixed-size ring in QEMU's memory (see CONSOLE_RING_BYTES). */
async function boundConsole(qmp: QmpClient): Promise<void> {
  await qmp.execute("chardev-change", { id: CONSOLE_CHARDEV_ID, backend: { type: "ringbuf", data: { size: CONSOLE_RING_BYTES } } });
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

type VmProcess = { child: ChildProcess; ownsRunDir: boolean } | { pid: number; ownsRunDir: boolean; startTime?: string };

class QemuVm implements RunningVm {
  readonly backend = "qemu-microvm";
  exitStatus: VmExit | undefined;
  private exitedPromise: Promise<VmExit> | undefined;
  private agentClient: AgentClient | undefined;
  private helloInfo: HelloInfo | undefined;
  private bootMsValue = 0;
  private disposed = false;
  private disposing: Promise<void> | undefined;
  private unregister: () => void = () => undefined;
  readonly startTime: string | undefined;

  constructor(
    readonly runDir: string,
    readonly accel: Accelerator,
    readonly attempts: number,
    private readonly proc: VmProcess,
  ) {
    // Read as soon as the process exists: a spawned VMM keeps its pid (setpriv execs QEMU).
    this.startTime = "child" in proc ? (proc.child.pid ? processStartTime(proc.child.pid) : undefined) : proc.startTime;
    if ("child" in proc) {
      const child = proc.child;
      this.exitedPromise = new Promise((resolve) => {
        const exited = (status: VmExit) => {
          this.exitStatus = status;
          resolve(status);
        };
        child.once("exit", (code, sig) => exited({ code, signal: sig }));
        child.once("error", () => exited({ code: -1, signal: null }));
      });
      // A VM we spawned dies with us until it is detached (or always, for one-shot VMs).
      this.unregister = registerExitCleanup(
        () => {
          this.killNow();
          for (const f of this.ownFiles()) rmSync(f, { recursive: true, force: true });
        },
        () => this.dispose(),
      );
    }
  }

  get pid(): number {
    return "child" in this.proc ? (this.proc.child.pid ?? -1) : this.proc.pid;
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

  /** Resolves when the VMM exits. A VM we did not spawn is watched by polling its pid. */
  get exited(): Promise<VmExit> {
    this.exitedPromise ??= new Promise((resolve) => {
      const timer = setInterval(() => {
        // Gone, or its pid already reused by another process.
        if (!processAlive(this.pid) || (this.startTime !== undefined && processStartTime(this.pid) !== this.startTime)) {
          clearInterval(timer);
          this.exitStatus = { code: null, signal: null };
          resolve(this.exitStatus);
        }
      }, 25);
      timer.unref();
    });
    return this.exitedPromise;
  }

  attachAgent(agent: AgentClient, hello: HelloInfo, bootMs: number): void {
    agent.closeReason = () => this.deathReason();
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
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 1_000).unref())]);
    return this.exitStatus ? `the VM died (${describeExit(this.exitStatus)})` : "the connection to the guest agent was lost";
  }

  /** The boot file's tail followed by what the ring holds, if the console moved there (the read drains the ring). */
  async consoleTail(maxBytes = 4096): Promise<string> {
    const booted = await readTail(runFiles(this.runDir).console, maxBytes);
    if (this.exitStatus || !processAlive(this.pid)) return booted;
    const ring = await this.withQmp((qmp) => qmp.execute("ringbuf-read", { device: CONSOLE_CHARDEV_ID, size: CONSOLE_RING_BYTES, format: "base64" })).then(
      (data) => Buffer.from(String(data), "base64").toString("utf8"),
      () => "", // still a file (boot failed before the switch), or QEMU is going away
    );
    return (booted + ring).slice(-maxBytes);
  }

  private async withQmp<T>(fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const qmp = await QmpClient.connect(runFiles(this.runDir).qmpSocket, Date.now() + 10_000);
    try {
      return await fn(qmp);
    } finally {
      qmp.close();
    }
  }

  saveState(path: string, options: SaveStateOptions = {}): Promise<void> {
    return this.withQmp(async (qmp) => {
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": MIGRATION_BANDWIDTH });
      await setIgnoreShared(qmp, options.skipSharedMemory === true);
      await qmp.execute("stop");
      await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(path)}` });
      await qmp.waitForMigration(Date.now() + 120_000);
      if (!options.skipSharedMemory) releaseZeroPagesOf(await copyOnWriteMemoryFile(this.pid));
    });
  }

  async saveMappedState(statePath: string, memoryPath: string): Promise<SavedMemory> {
    const memory = await copyOnWriteMemory(this.pid);
    if (!memory) {
      await this.saveState(statePath);
      return { kind: "streamed", reason: "the VM's RAM is anonymous memory, not a mapped file" };
    }
    try {
      return await this.withQmp(async (qmp) => {
        await qmp.execute("stop");
        await saveDeviceState(qmp, statePath);
        const { ownBytes } = await captureMappedRam(this.pid, memory.path, memory.bytes, memoryPath);
        return { kind: "mapped" as const, memoryPath, ownBytes };
      });
    } catch (error) {
      if (!isPyroError(error, "HOST_COMMAND_FAILED")) throw error;
      // Its memory cannot be read here (another uid, Yama): the whole state, through QEMU.
      await rm(memoryPath, { force: true });
      await this.saveState(statePath);
      return { kind: "streamed", reason: error.message };
    }
  }

  pause(): Promise<void> {
    return this.withQmp(async (qmp) => {
      await qmp.execute("stop");
    });
  }

  resume(): Promise<void> {
    return this.withQmp(async (qmp) => {
      await qmp.execute("cont");
    });
  }

  addPortForward(hostPort: number, guestPort: number): Promise<void> {
    return this.withQmp(async (qmp) => {
      const out = await qmp.execute("human-monitor-command", { "command-line": `hostfwd_add net0 tcp:127.0.0.1:${hostPort}-:${guestPort}` });
      if (typeof out === "string" && out.trim()) throw new PyroError("GUEST_OPERATION_FAILED", `cannot publish 127.0.0.1:${hostPort}: ${out.trim()}`);
    });
  }

  removePortForward(hostPort: number): Promise<void> {
    return this.withQmp(async (qmp) => {
      await qmp.execute("human-monitor-command", { "command-line": `hostfwd_remove net0 tcp:127.0.0.1:${hostPort}` });
    });
  }

  detach(): VmHandle {
    this.unregister();
    if ("child" in this.proc) this.proc.child.unref();
    this.agentClient?.close();
    this.disposed = true; // closing the agent now is expected, not a death
    return { pid: this.pid, runDir: this.runDir, accel: this.accel, ...(this.startTime ? { startTime: this.startTime } : {}) };
  }

  /** What dispose removes: the VM's own files, or the whole run directory when it owns it. */
  private ownFiles(): string[] {
    const files = runFiles(this.runDir);
    return this.proc.ownsRunDir ? [this.runDir] : [files.agentSocket, files.qmpSocket, files.console, files.stderr];
  }

  private killNow(): void {
    if (this.exitStatus || this.pid <= 0) return;
    try {
      // A VMM we spawned runs in its own process group (with setpriv in front of it, when used).
      process.kill("child" in this.proc ? -this.pid : this.pid, "SIGKILL");
    } catch {
      try {
        process.kill(this.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  /** Kills the VMM and removes its sockets and logs, leaving the run directory and disk in place. */
  terminate(): Promise<void> {
    const files = runFiles(this.runDir);
    return this.shutdown([files.agentSocket, files.qmpSocket, files.console, files.stderr]);
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
  if (exit.code === null && exit.signal === null) return "it is gone";
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}
