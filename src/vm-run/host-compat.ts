import { runHostCommandRaw } from "../process/host-command.js";
import type { RunOptions, RunResult } from "./run-result.js";
import { RUN_DEFAULTS } from "./run-result.js";
import { PyroError } from "../errors.js";

/**
 * Runs the command on the host. Only reachable with allowHostCompat; the result says so loudly.
 * No isolation whatsoever: the command sees the host filesystem and network as the pyro user.
 */
export async function runOnHost(environment: string, command: string[], options: RunOptions, whyNoGuest: string): Promise<RunResult> {
  const started = Date.now();
  const timeoutMs = (options.timeoutSeconds ?? RUN_DEFAULTS.timeoutSeconds) * 1000;
  const max = options.maxOutputBytes ?? RUN_DEFAULTS.maxOutputBytes;
  let timedOut = false;
  let result;
  try {
    result = await runHostCommandRaw(command[0]!, command.slice(1), {
      timeoutMs,
      maxOutputBytes: max,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      env: { ...process.env, ...options.env },
      ...(options.stdin !== undefined ? { input: options.stdin } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (error instanceof PyroError && error.code === "HOST_COMMAND_FAILED" && error.message.includes("timed out")) {
      timedOut = true;
      result = { stdout: Buffer.alloc(0), stderr: String(error.details.stderr ?? ""), exitCode: 124 };
    } else if (error instanceof PyroError && error.code === "HOST_TOOL_MISSING") {
      result = { stdout: Buffer.alloc(0), stderr: `${command[0]}: command not found\n`, exitCode: 127 };
    } else {
      throw error;
    }
  }
  const duration = Date.now() - started;
  return {
    environment,
    command,
    exit_code: result.exitCode,
    stdout: result.stdout.toString("utf8"),
    stderr: result.stderr,
    duration_ms: duration,
    boot_ms: 0,
    total_ms: duration,
    timed_out: timedOut,
    stdout_truncated: false,
    stderr_truncated: false,
    execution_mode: "host_compat",
    backend: "host",
    accel: "none",
    vcpu_count: 0,
    mem_mib: 0,
    network: true,
    boot_attempts: 0,
    warning: `ran on the HOST without isolation (--allow-host-compat) because no guest could boot: ${whyNoGuest}`,
  };
}
