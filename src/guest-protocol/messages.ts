/** Typed views of the agent's replies (protocol version 1). */

export interface HelloInfo {
  protocol: number;
  agentVersion: string;
  /** Guest uptime (ms) when the agent started serving: the kernel+init part of boot. */
  bootMs: number;
  uptimeMs: number;
}

export interface ExecRequest {
  /** argv (no shell) or a shell string run with /bin/sh -c. */
  command: string[] | string;
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  stdin?: Buffer | string;
  /** Cap per stream; the guest keeps the first and last halves. */
  maxOutputBytes?: number;
  /**
   * What the command wrote is on the VM's disks when exec returns (it survives a killed VMM): the
   * agent flushes its page cache before answering, or, an agent older than that, a `sync` follows.
   */
  syncAfter?: boolean;
}

export interface CapturedStream {
  bytes: Buffer;
  /** Bytes the command wrote; more than bytes.length when output was capped. */
  totalBytes: number;
  /** Where the kept head ends and the kept tail begins. */
  headLength: number;
}

export interface GuestExecResult {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  durationMs: number;
  stdout: CapturedStream;
  stderr: CapturedStream;
}

export interface GuestFileEntry {
  path: string;
  type: "file" | "directory" | "symlink" | "fifo" | "socket" | "char_device" | "block_device" | "other";
  size: number;
  mode: number;
  mtimeMs: number;
  target?: string;
}

/** Renders a captured stream as text, marking where capped output was cut. */
export function capturedText(stream: CapturedStream): string {
  const omitted = stream.totalBytes - stream.bytes.length;
  if (omitted <= 0) return stream.bytes.toString("utf8");
  const head = stream.bytes.subarray(0, stream.headLength).toString("utf8");
  const tail = stream.bytes.subarray(stream.headLength).toString("utf8");
  return `${head}\n[... ${omitted} bytes omitted by pyro's output cap ...]\n${tail}`;
}
