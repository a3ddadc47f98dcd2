import { spawn } from "node:child_process";
import { lstatSync, readlinkSync } from "node:fs";
import { PyroError } from "../errors.js";
import { requireExecutable } from "./host-command.js";

/**
 * Runs a host tool over guest-controlled data (a disk image the guest wrote block by block) inside
 * bubblewrap. Tools like debugfs and qemu-img are not hardened against malicious images, so each run
 * gets: no network, no IPC, its own PID namespace, no capabilities, only /usr (read-only), the named
 * input files (read-only) and one writable output directory; CPU, address-space and file-size
 * rlimits; a wall-clock deadline; and it dies with pyro. What it prints or leaves in the output
 * directory stays untrusted: callers read results back with lstat-checked paths inside that dir.
 */

/** Where the writable output directory appears inside the sandbox. */
export const SANDBOX_OUTPUT_DIR = "/out";

export interface SandboxLimits {
  /** RLIMIT_CPU, seconds. */
  cpuSeconds: number;
  /** RLIMIT_AS, bytes. */
  addressSpaceBytes: number;
  /** RLIMIT_FSIZE, bytes: the largest file the tool may write. */
  fileSizeBytes: number;
}

export interface SandboxRun {
  /** Absolute tool path as it exists under /usr on the host (it is visible at the same path inside). */
  tool: string;
  args: string[];
  /** Host files visible read-only at the same absolute path inside the sandbox (must be regular files). */
  readOnlyFiles?: string[];
  /** Host directories visible read-only at the same absolute path (real directories, not symlinks). */
  readOnlyDirs?: string[];
  /**
   * Run as uid/gid 0 of a new user namespace, so files the caller owns appear owned by root to the
   * tool (mkfs.ext4 -d copies owners into the image); the tool still holds no capabilities.
   */
  asNamespaceRoot?: boolean;
  /** Host directory mounted writable at SANDBOX_OUTPUT_DIR; the tool's working directory. */
  outputDir?: string;
  input?: string;
  timeoutMs: number;
  limits: SandboxLimits;
  /** Keep at most this many bytes of stdout (the head); the run is stopped once it has printed more. */
  maxStdoutBytes?: number;
}

export interface SandboxResult {
  stdout: Buffer;
  /** True when the tool printed more than maxStdoutBytes and was stopped. */
  stdoutTruncated: boolean;
  stderr: string;
  exitCode: number;
  /** Set when the tool died of a signal (crash, rlimit): its name. */
  signal?: string;
}

const MAX_STDERR_BYTES = 64 * 1024;
/** The merged-/usr symlinks (or real dirs on older layouts) a dynamically linked tool needs. */
const ROOT_LINKS = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

function rootLayoutArgs(): string[] {
  const args = ["--ro-bind", "/usr", "/usr"];
  for (const dir of ROOT_LINKS) {
    try {
      const st = lstatSync(dir);
      if (st.isSymbolicLink()) args.push("--symlink", readlinkSync(dir), dir);
      else if (st.isDirectory()) args.push("--ro-bind", dir, dir);
    } catch {
      // absent on this host
    }
  }
  return args;
}

function inputArgs(files: string[]): string[] {
  const args: string[] = [];
  for (const file of files) {
    // bwrap follows a symlinked source; only regular files pyro resolved itself go in.
    const st = lstatSync(file, { throwIfNoEntry: false });
    if (!st?.isFile()) throw new PyroError("HOST_COMMAND_FAILED", `sandbox input ${file} is not a regular file`, { path: file });
    args.push("--ro-bind", file, file);
  }
  return args;
}

function dirArgs(dirs: string[]): string[] {
  const args: string[] = [];
  for (const dir of dirs) {
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (!st?.isDirectory()) throw new PyroError("HOST_COMMAND_FAILED", `sandbox input ${dir} is not a directory`, { path: dir });
    args.push("--ro-bind", dir, dir);
  }
  return args;
}

/** The full bwrap argument list (exported for tests that check the confinement flags). */
export function sandboxArgs(run: SandboxRun): string[] {
  const { cpuSeconds, addressSpaceBytes, fileSizeBytes } = run.limits;
  for (const [name, value] of Object.entries(run.limits)) {
    // A limit of 0 (or a wrapped 32-bit shift) would make every tool crash at start; say so instead.
    if (!Number.isSafeInteger(value) || value < 0) throw new PyroError("HOST_COMMAND_FAILED", `sandbox limit ${name} is not a byte/second count: ${value}`);
  }
  return [
    "--unshare-all",
    ...(run.asNamespaceRoot ? ["--unshare-user", "--uid", "0", "--gid", "0"] : []),
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    "--clearenv",
    "--setenv",
    "PATH",
    "/usr/bin:/usr/sbin",
    "--setenv",
    "LC_ALL",
    "C",
    ...rootLayoutArgs(),
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
    ...inputArgs(run.readOnlyFiles ?? []),
    ...dirArgs(run.readOnlyDirs ?? []),
    ...(run.outputDir ? ["--bind", run.outputDir, SANDBOX_OUTPUT_DIR, "--chdir", SANDBOX_OUTPUT_DIR] : ["--chdir", "/tmp"]),
    "--",
    requireExecutable("prlimit", "util-linux"),
    `--cpu=${cpuSeconds}`,
    `--as=${addressSpaceBytes}`,
    `--fsize=${fileSizeBytes}`,
    "--core=0",
    "--nofile=256",
    "--",
    run.tool,
    ...run.args,
  ];
}

const SIGNALS: Record<number, string> = { 6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL", 11: "SIGSEGV", 24: "SIGXCPU", 25: "SIGXFSZ" };

/**
 * Runs one tool confined. Resolves with its exit status (non-zero is not an error here); rejects
 * with HOST_COMMAND_FAILED when it outlives its deadline or the sandbox cannot start.
 */
export async function runSandboxed(run: SandboxRun): Promise<SandboxResult> {
  const bwrap = requireExecutable("bwrap", "bubblewrap");
  const args = sandboxArgs(run);
  const name = run.tool.split("/").pop();
  const maxStdout = run.maxStdoutBytes ?? 64 << 20;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bwrap, args, { stdio: [run.input === undefined ? "ignore" : "pipe", "pipe", "pipe"], detached: true, env: {} });
    const out: Buffer[] = [];
    let outBytes = 0;
    let truncated = false;
    const err: Buffer[] = [];
    let errBytes = 0;
    let timedOut = false;
    let settled = false;
    // bwrap is the group leader; --die-with-parent and the PID namespace take the tool down with it.
    const kill = () => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, run.timeoutMs);
    process.once("exit", kill);
    child.stdout!.on("data", (c: Buffer) => {
      if (truncated) return;
      const room = maxStdout - outBytes;
      if (c.length > room) {
        out.push(c.subarray(0, room));
        outBytes = maxStdout;
        truncated = true;
        kill();
        return;
      }
      out.push(c);
      outBytes += c.length;
    });
    child.stderr!.on("data", (c: Buffer) => {
      if (errBytes < MAX_STDERR_BYTES) err.push(c.subarray(0, MAX_STDERR_BYTES - errBytes));
      errBytes += c.length;
    });
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      process.removeListener("exit", kill);
      fn();
    };
    child.on("error", (e) => finish(() => reject(new PyroError("HOST_COMMAND_FAILED", `cannot start the sandbox for ${name}: ${e.message}`))));
    child.on("close", (code, signal) =>
      finish(() => {
        const stderr = Buffer.concat(err).toString("utf8");
        if (timedOut) {
          reject(
            new PyroError(
              "HOST_COMMAND_FAILED",
              `${name} did not finish within ${Math.round(run.timeoutMs / 1000)} s and was stopped; the disk image may be damaged`,
              { tool: name, timedOut: true, stderr: stderr.slice(-2000) },
            ),
          );
          return;
        }
        // bwrap exits 128+N when its child dies of signal N; a stop for truncation is not a crash.
        const exitCode = code ?? 128;
        const died = !truncated && exitCode > 128 ? (SIGNALS[exitCode - 128] ?? `signal ${exitCode - 128}`) : signal && !truncated ? signal : undefined;
        resolvePromise({ stdout: Buffer.concat(out), stdoutTruncated: truncated, stderr, exitCode, ...(died ? { signal: died } : {}) });
      }),
    );
    if (run.input !== undefined && child.stdin) {
      child.stdin.on("error", () => undefined);
      child.stdin.end(run.input);
    }
  });
}

/** A non-zero or crashed sandboxed run as one clear HOST_COMMAND_FAILED line. */
export function sandboxFailure(result: SandboxResult, what: string): PyroError {
  const tail = result.stderr.trim().split("\n").slice(-4).join("; ");
  const how = result.signal ? `crashed (${result.signal})` : `exited with ${result.exitCode}`;
  return new PyroError("HOST_COMMAND_FAILED", `${what}: the tool ${how}${tail ? `: ${tail}` : ""}; the disk image may be damaged`, {
    exitCode: result.exitCode,
    signal: result.signal,
    stderr: tail,
  });
}
