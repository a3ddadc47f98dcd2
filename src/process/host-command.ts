import { spawn, type SpawnOptions } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { PyroError } from "../errors.js";
import { withPrivateUmask } from "../storage/private-storage.js";

/** Debian puts mkfs.ext4 and friends in sbin, which a normal user's PATH often lacks. */
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/** Finds an executable on PATH (plus the sbin dirs), or undefined. */
export function findExecutable(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = [...(env.PATH ?? "").split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** cargo: on PATH, else where rustup puts it (~/.cargo/bin), as scripts/setup.sh looks for it. */
export function findCargo(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return findExecutable("cargo", env) ?? (env.HOME ? join(env.HOME, ".cargo", "bin", "cargo") : undefined);
}

/** Like findExecutable, but a missing tool is a clear error naming the Debian package and the fix. */
export function requireExecutable(name: string, debianPackage: string): string {
  const found = findExecutable(name);
  if (!found) {
    throw new PyroError("HOST_TOOL_MISSING", `${name} is not installed; install it with: apt-get install -y ${debianPackage} (or run scripts/setup.sh)`, {
      tool: name,
      package: debianPackage,
    });
  }
  return found;
}

export interface HostCommandOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: Buffer | string;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called with each chunk of stderr, e.g. to relay progress. */
  onStderr?: (chunk: string) => void;
  /** Keep at most this many bytes of each stream (the tail). Default 4 MiB. */
  maxOutputBytes?: number;
  /** The tool writes into pyro's private directories: run it under umask 077 (files 0600). */
  privateFiles?: boolean;
}

export interface HostCommandResult {
  stdout: Buffer;
  stderr: string;
  exitCode: number;
}

function keepTail(chunks: Buffer[], size: { n: number }, chunk: Buffer, max: number): void {
  chunks.push(chunk);
  size.n += chunk.length;
  while (size.n - (chunks[0]?.length ?? 0) >= max && chunks.length > 1) {
    size.n -= chunks.shift()!.length;
  }
}

/**
 * Runs a host tool (never a guest command) to completion. The child gets its own process group,
 * so a timeout or abort kills everything it started. Non-zero exit is returned, not thrown.
 */
export function runHostCommandRaw(command: string, args: string[], options: HostCommandOptions = {}): Promise<HostCommandResult> {
  const max = options.maxOutputBytes ?? 4 << 20;
  return new Promise((resolvePromise, reject) => {
    const spawnOptions: SpawnOptions = {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      detached: true,
    };
    const child = options.privateFiles ? withPrivateUmask(() => spawn(command, args, spawnOptions)) : spawn(command, args, spawnOptions);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const outSize = { n: 0 };
    const errSize = { n: 0 };
    let settled = false;
    let killedFor: string | undefined;
    const killTree = (why: string) => {
      killedFor ??= why;
      if (child.pid) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    };
    const timer = options.timeoutMs ? setTimeout(() => killTree(`timed out after ${options.timeoutMs} ms`), options.timeoutMs) : undefined;
    const onAbort = () => killTree("cancelled");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const exitGuard = () => killTree("pyro exited");
    process.once("exit", exitGuard);
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      process.removeListener("exit", exitGuard);
      fn();
    };
    child.stdout?.on("data", (c: Buffer) => keepTail(out, outSize, c, max));
    child.stderr?.on("data", (c: Buffer) => {
      keepTail(err, errSize, c, max);
      options.onStderr?.(c.toString("utf8"));
    });
    child.on("error", (e: NodeJS.ErrnoException) =>
      finish(() =>
        reject(
          e.code === "ENOENT"
            ? new PyroError("HOST_TOOL_MISSING", `${command} is not installed (run scripts/setup.sh)`, { tool: command })
            : new PyroError("HOST_COMMAND_FAILED", `cannot run ${command}: ${e.message}`),
        ),
      ),
    );
    child.on("close", (code, signal) =>
      finish(() => {
        if (killedFor) {
          reject(
            new PyroError(killedFor === "cancelled" ? "CANCELLED" : "HOST_COMMAND_FAILED", `${command} ${killedFor}`, {
              stderr: Buffer.concat(err).toString("utf8").slice(-2000),
            }),
          );
          return;
        }
        resolvePromise({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString("utf8"), exitCode: code ?? 128 + signalNumber(signal) });
      }),
    );
    if (options.input !== undefined && child.stdin) {
      child.stdin.on("error", () => undefined); // EPIPE if the tool exits early; its exit status tells the story
      child.stdin.end(options.input);
    }
  });
}

function signalNumber(signal: NodeJS.Signals | null): number {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGSEGV: 11, SIGABRT: 6 };
  return signal ? (table[signal] ?? 0) : 0;
}

/** Runs a host tool and throws HOST_COMMAND_FAILED (with the stderr tail) unless it exits 0. */
export async function runHostCommand(command: string, args: string[], options: HostCommandOptions = {}): Promise<HostCommandResult> {
  const result = await runHostCommandRaw(command, args, options);
  if (result.exitCode !== 0) {
    const tail = result.stderr.trim().split("\n").slice(-8).join("\n");
    throw new PyroError("HOST_COMMAND_FAILED", `${command} ${args.slice(0, 3).join(" ")}… exited with ${result.exitCode}: ${tail}`, {
      command,
      args,
      exitCode: result.exitCode,
      stderr: tail,
    });
  }
  return result;
}
