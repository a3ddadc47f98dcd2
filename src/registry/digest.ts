import { PyroError } from "../errors.js";

/** The only digest form pyro accepts: it names files and URLs, so nothing else may pass. */
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Whether `value` is a well-formed sha256 digest. */
export function isDigest(value: unknown): value is string {
  return typeof value === "string" && DIGEST.test(value);
}

/** Returns `value` when it is a well-formed sha256 digest; else a clear INVALID_ARGUMENT naming `context`. */
export function requireDigest(value: unknown, context: string): string {
  if (isDigest(value)) return value;
  const shown = typeof value === "string" ? `'${value.slice(0, 100)}'` : String(value);
  throw new PyroError("INVALID_ARGUMENT", `${context} has an invalid digest ${shown}: expected sha256:<64 lowercase hex digits>`);
}

/** A file name for a blob ("sha256-<hex>"), from a digest checked first. */
export function digestFileName(value: unknown, context: string): string {
  return requireDigest(value, context).replace(":", "-");
}
