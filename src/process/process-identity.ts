import { readFileSync } from "node:fs";
import { processAlive } from "./process-alive.js";

/** A process as the kernel knows it: a pid alone is reused, pid + start time is not. */
export interface ProcessIdentity {
  pid: number;
  /** Clock ticks after boot at which the process started (/proc/<pid>/stat field 22); null where /proc is missing. */
  start: string | null;
}

/** The start time of `pid`, or undefined when there is no such process. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')': count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19];
}

export function currentProcessIdentity(): ProcessIdentity {
  return { pid: process.pid, start: processStartTime(process.pid) ?? null };
}

/** Whether the process that recorded `identity` is still the one running under its pid. */
export function identityAlive(identity: ProcessIdentity): boolean {
  if (identity.start === null) return processAlive(identity.pid);
  const start = processStartTime(identity.pid);
  if (start !== undefined) return start === identity.start;
  return false;
}
