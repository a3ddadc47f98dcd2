import { PyroError } from "../errors.js";
import { SERVICE_DEFAULTS } from "./workspace-limits.js";

/** How pyro decides a service is ready: one check, probed until it passes or the timeout ends. */
export type Readiness =
  | { type: "file"; path: string }
  | { type: "tcp"; host?: string; port: number }
  | { type: "http"; url: string }
  | { type: "command"; command: string };

/** A caller's readiness options, one field per kind of check (at most one may be given). */
export interface ReadinessChoices {
  file?: string | undefined;
  tcp?: { host?: string; port: number } | undefined;
  http?: string | undefined;
  command?: string | undefined;
  timeoutSeconds?: number | undefined;
  intervalMs?: number | undefined;
}

/** How a face spells each option, so a refusal names the caller's own options (a face without an interval option omits it). */
export type ReadinessSpelling = Record<Exclude<keyof ReadinessChoices, "intervalMs">, string> & { intervalMs?: string };

/**
 * The one rule for readiness options, for the CLI and MCP alike: at most one check; a timeout or
 * interval only with a check (else it would be silently ignored); a timeout within the bound.
 */
export function chooseReadiness(
  choices: ReadinessChoices,
  spelling: ReadinessSpelling,
): { readiness?: Readiness; readyTimeoutSeconds?: number; readyIntervalMs?: number } {
  const checks: Readiness[] = [
    ...(choices.file ? [{ type: "file" as const, path: choices.file }] : []),
    ...(choices.tcp ? [{ type: "tcp" as const, ...choices.tcp }] : []),
    ...(choices.http ? [{ type: "http" as const, url: choices.http }] : []),
    ...(choices.command ? [{ type: "command" as const, command: choices.command }] : []),
  ];
  const checkNames = [spelling.file, spelling.tcp, spelling.http, spelling.command];
  if (checks.length > 1) throw new PyroError("INVALID_ARGUMENT", `give at most one of ${checkNames.join(", ")}`);
  const timing = [
    ...(choices.timeoutSeconds !== undefined ? [spelling.timeoutSeconds] : []),
    ...(choices.intervalMs !== undefined ? [spelling.intervalMs ?? "the probe interval"] : []),
  ];
  const readiness = checks[0];
  if (!readiness && timing.length) {
    const named = spelling.intervalMs ? `${spelling.timeoutSeconds} and ${spelling.intervalMs} need` : `${spelling.timeoutSeconds} needs`;
    throw new PyroError("INVALID_ARGUMENT", `${named} a readiness check: add ${checkNames.slice(0, -1).join(", ")} or ${checkNames.at(-1)}`);
  }
  const max = SERVICE_DEFAULTS.readyTimeoutMaxSeconds;
  if (choices.timeoutSeconds !== undefined && !(choices.timeoutSeconds > 0 && choices.timeoutSeconds <= max)) {
    throw new PyroError("INVALID_ARGUMENT", `${spelling.timeoutSeconds} must be between 0 and ${max} seconds, got ${choices.timeoutSeconds}`);
  }
  return {
    ...(readiness ? { readiness } : {}),
    ...(choices.timeoutSeconds !== undefined ? { readyTimeoutSeconds: choices.timeoutSeconds } : {}),
    ...(choices.intervalMs !== undefined ? { readyIntervalMs: choices.intervalMs } : {}),
  };
}
