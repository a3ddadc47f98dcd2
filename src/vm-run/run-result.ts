import { DEFAULT_MACHINE_SHAPE } from "../runtime/guest-limits.js";

/** The result of `pyro run`, `Pyro.run()` and the vm_run tool: one structure for all three faces. */
export interface RunResult {
  environment: string;
  command: string[];
  exit_code: number;
  stdout: string;
  stderr: string;
  /** How long the command itself ran. */
  duration_ms: number;
  /** VMM start to the agent's first reply (0 for host_compat). */
  boot_ms: number;
  /** Whole run: preparing, booting, running and cleaning up. */
  total_ms: number;
  timed_out: boolean;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  /** "guest": ran inside a microVM. "host_compat": ran on the host because the user allowed it. */
  execution_mode: "guest" | "host_compat";
  backend: string;
  accel: "kvm" | "tcg" | "none";
  vcpu_count: number;
  mem_mib: number;
  network: boolean;
  boot_attempts: number;
  /** Present when something about the result needs the reader's attention (always for host_compat). */
  warning?: string;
}

export interface RunOptions {
  vcpuCount?: number;
  memMib?: number;
  timeoutSeconds?: number;
  network?: boolean;
  /** Run on the host if no guest can boot. Off by default: isolation is the product. */
  allowHostCompat?: boolean;
  /** Working directory in the guest. */
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string | Buffer;
  maxOutputBytes?: number;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

export const RUN_DEFAULTS = {
  ...DEFAULT_MACHINE_SHAPE,
  timeoutSeconds: 30,
  maxOutputBytes: 1 << 20,
} as const;
