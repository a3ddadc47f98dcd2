import { PyroError, isPyroError } from "../errors.js";
import { checkExecRequest } from "../guest-protocol/agent-client.js";
import { capturedText } from "../guest-protocol/messages.js";
import type { PyroPaths } from "../paths.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { proxyEnvironment } from "../network/egress-launch.js";
import { launchDisposableVm } from "./disposable-vm.js";
import type { WarmVmSlot } from "./warm-vm.js";
import { runOnHost } from "./host-compat.js";
import { checkCommandTimeout, checkMachineShape } from "../runtime/guest-limits.js";
import { RUN_DEFAULTS, type RunOptions, type RunResult } from "./run-result.js";

function validate(command: string[], options: RunOptions): void {
  if (command.length === 0 || !command[0]) throw new PyroError("INVALID_ARGUMENT", "no command given; usage: pyro run ENV -- COMMAND [ARGS...]");
  checkMachineShape(options);
  checkCommandTimeout(options.timeoutSeconds);
  checkExecRequest({
    command,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
    ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
  });
}

/** Boots a disposable VM from `environment`, runs one command, and destroys the VM. */
export async function runOneShot(paths: PyroPaths, environment: string, command: string[], options: RunOptions = {}, warm?: WarmVmSlot): Promise<RunResult> {
  validate(command, options);
  const started = Date.now();
  const vcpuCount = options.vcpuCount ?? RUN_DEFAULTS.vcpuCount;
  const memMib = options.memMib ?? RUN_DEFAULTS.memMib;
  const timeoutMs = Math.round((options.timeoutSeconds ?? RUN_DEFAULTS.timeoutSeconds) * 1000);
  let vm: RunningVm | undefined;
  try {
    vm =
      (await warm?.take(environment, { vcpuCount, memMib, network: Boolean(options.network) })) ??
      (await launchDisposableVm(paths, environment, {
        vcpuCount,
        memMib,
        network: Boolean(options.network),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      }));
    const exec = await vm.agent.exec({
      command,
      cwd: options.cwd ?? "/root",
      env: { ...(options.network ? proxyEnvironment() : {}), ...options.env },
      timeoutMs,
      maxOutputBytes: options.maxOutputBytes ?? RUN_DEFAULTS.maxOutputBytes,
      ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
    });
    const result: RunResult = {
      environment,
      command,
      exit_code: exec.exitCode,
      stdout: capturedText(exec.stdout),
      stderr: capturedText(exec.stderr),
      duration_ms: exec.durationMs,
      boot_ms: vm.bootMs,
      total_ms: 0,
      timed_out: exec.timedOut,
      stdout_truncated: exec.stdout.totalBytes > exec.stdout.bytes.length,
      stderr_truncated: exec.stderr.totalBytes > exec.stderr.bytes.length,
      execution_mode: "guest",
      backend: vm.backend,
      accel: vm.accel,
      vcpu_count: vcpuCount,
      mem_mib: memMib,
      network: Boolean(options.network),
      boot_attempts: vm.attempts,
    };
    if (exec.timedOut) result.warning = `command timed out after ${timeoutMs / 1000} s and was killed`;
    await vm.dispose();
    vm = undefined;
    result.total_ms = Date.now() - started;
    // The next one is prepared after this run, not during it: the two would share the CPUs.
    void warm?.fill();
    return result;
  } catch (error) {
    if (vm) await vm.dispose();
    if (options.allowHostCompat && isPyroError(error) && isNoGuestError(error)) {
      return runOnHost(environment, command, options, error.message);
    }
    throw error;
  }
}

/** Failures that mean "no guest available here", where host compat may step in. Not command errors. */
function isNoGuestError(error: PyroError): boolean {
  return ["GUEST_BOOT_FAILED", "KERNEL_UNAVAILABLE", "AGENT_UNAVAILABLE", "HOST_TOOL_MISSING", "ENVIRONMENT_NOT_INSTALLED", "ENVIRONMENT_CORRUPT"].includes(
    error.code,
  );
}
