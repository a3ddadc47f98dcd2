import { PyroError } from "../errors.js";
import { MAX_HEADER_LEN, MAX_PAYLOAD_LEN } from "./frame-codec.js";

/** A UTF-16 surrogate without its partner: not Unicode text, and not encodable as UTF-8. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether a string is well-formed Unicode (String.prototype.isWellFormed, which ES2023 lacks). */
export function isWellFormedText(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

function hasIllFormedText(value: unknown): boolean {
  if (typeof value === "string") return !isWellFormedText(value);
  if (Array.isArray(value)) return value.some(hasIllFormedText);
  if (value && typeof value === "object") return Object.entries(value).some(([k, v]) => !isWellFormedText(k) || hasIllFormedText(v));
  return false;
}

/**
 * Refuses, as a clear INVALID_ARGUMENT, arguments the guest protocol cannot carry: a request's
 * JSON header is at most MAX_HEADER_LEN bytes (argv, environment, paths), its payload at most
 * MAX_PAYLOAD_LEN, and text must be valid Unicode. Callers check up front, before they boot or
 * change anything; AgentClient checks every request again, exactly.
 */
export function checkGuestRequest(what: string, fields: Record<string, unknown>, payloadBytes = 0): void {
  if (hasIllFormedText(fields)) {
    throw new PyroError("INVALID_ARGUMENT", `${what} contains text that is not valid Unicode (a lone UTF-16 surrogate); send UTF-8 text`);
  }
  const headerBytes = Buffer.byteLength(JSON.stringify(fields), "utf8");
  if (headerBytes > MAX_HEADER_LEN) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `${what} takes ${headerBytes} bytes; a guest request carries at most ${MAX_HEADER_LEN} bytes of command, arguments and environment: put large data in a file in the workspace and pass its path`,
      { bytes: headerBytes, limit: MAX_HEADER_LEN },
    );
  }
  if (payloadBytes > MAX_PAYLOAD_LEN) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      `${what} carries ${payloadBytes} bytes of data; a guest request carries at most ${MAX_PAYLOAD_LEN}: send it in pieces or as an archive (sync push)`,
      { bytes: payloadBytes, limit: MAX_PAYLOAD_LEN },
    );
  }
}
