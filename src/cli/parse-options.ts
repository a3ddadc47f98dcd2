import { InvalidArgumentError } from "commander";
import { TCP_PORT_RANGE } from "../network/tcp-port.js";

/** Commander parser for a whole positive integer within bounds. */
export function integerOption(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`expected a whole number, got '${value}'`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${min} and ${max}`);
    return n;
  };
}

/** Commander parser for a positive number of seconds (fractions allowed). */
export function secondsOption(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number of seconds, got '${value}'`);
  return n;
}

/** Commander parser for a positive number of seconds up to `max` (fractions allowed). */
export function secondsUpTo(max: number) {
  return (value: string): number => {
    const n = secondsOption(value);
    if (n > max) throw new InvalidArgumentError(`must be at most ${max} seconds, got '${value}'`);
    return n;
  };
}

/** Repeatable option values, collected in order. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Repeatable KEY=VALUE options (labels, secrets), collected into an object. */
export function collectKeyValue(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const at = value.indexOf("=");
  if (at <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got '${value}'`);
  return { ...previous, [value.slice(0, at)]: value.slice(at + 1) };
}

/** Repeatable KEY=VALUE options where a key may repeat (secret scopes): values gathered per key. */
export function collectKeyValues(value: string, previous: Record<string, string[]> = {}): Record<string, string[]> {
  const at = value.indexOf("=");
  if (at <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got '${value}'`);
  const key = value.slice(0, at);
  return { ...previous, [key]: [...(previous[key] ?? []), value.slice(at + 1)] };
}

/** A TCP port: 1–65535, or 0 where the caller lets the system pick a free one. */
export function portNumber(value: string, options: { allowZero: boolean }): number {
  const min = options.allowZero ? 0 : 1;
  if (!/^\d{1,5}$/.test(value) || Number(value) < min || Number(value) > TCP_PORT_RANGE.max) {
    throw new InvalidArgumentError(
      `port must be a number from ${min} to ${TCP_PORT_RANGE.max}${options.allowZero ? " (0 picks a free one)" : ""}, got '${value}'`,
    );
  }
  return Number(value);
}
