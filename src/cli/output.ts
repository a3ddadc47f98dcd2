import { PyroError } from "../errors.js";

/** JSON with sorted keys, so output is stable across runs and diff-friendly. */
export function toStableJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Buffer)) {
        return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
      }
      return v;
    },
    2,
  );
}

export function printJson(value: unknown): void {
  process.stdout.write(toStableJson(value) + "\n");
}

/** The result as JSON with --json, else the human rendering. */
export function emit(json: boolean | undefined, value: unknown, human: () => string): void {
  if (json) printJson(value);
  else process.stdout.write(human());
}

/** Bad usage (unknown option, missing argument, conflicting flags) exits 2, like most Unix tools. */
export const USAGE_EXIT = 2;

/** pyro's own failures exit 125, like `docker run`, so they differ from most command exit codes. */
export const PYRO_FAILURE_EXIT = 125;

export function reportError(error: unknown, json: boolean): number {
  const pyroError = error instanceof PyroError ? error : undefined;
  const code = pyroError?.code ?? "INTERNAL";
  const message = error instanceof Error ? error.message : String(error);
  if (json) {
    printJson({ error: { code, message, ...(pyroError && Object.keys(pyroError.details).length ? { details: pyroError.details } : {}) } });
  } else {
    process.stderr.write(`pyro: error [${code}]: ${message}\n`);
    const consoleTail = pyroError?.details.console;
    if (typeof consoleTail === "string" && consoleTail.trim() && process.env.PYRO_DEBUG) {
      process.stderr.write(`--- guest console (tail) ---\n${consoleTail.trim()}\n`);
    }
    if (!pyroError && process.env.PYRO_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  }
  return PYRO_FAILURE_EXIT;
}

/** "yes"/"no" for human output. */
export function yesNo(value: boolean): string {
  return value ? "yes" : "no";
}

/** One bracketed line per result, like `[workspace-exec] workspace_id=… exit_code=0`. */
export function summaryLine(tag: string, fields: object): string {
  const parts = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`);
  return `[${tag}] ${parts.join(" ")}\n`;
}
