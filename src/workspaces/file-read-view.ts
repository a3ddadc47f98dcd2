import { isText } from "./text-content.js";
import type { Redactor } from "./secret-redaction.js";
import { FILE_READ_DEFAULT_MAX_BYTES } from "./workspace-limits.js";

export { FILE_READ_DEFAULT_MAX_BYTES };

/** What a bounded file read returns: text as UTF-8, anything else as base64 (and says so). */
export interface FileReadView {
  size: number;
  truncated: boolean;
  encoding: "utf8" | "base64";
  content: string;
}

/**
 * Shows the first `maxBytes` of a file, secrets redacted before the cut: `head` holds the file's
 * first bytes, ideally `maxBytes + redactor.contextBytes` of them, so a secret crossing the cut is
 * seen (and replaced) whole; `size` is the whole file's.
 */
export function fileReadView(head: Buffer, size: number, maxBytes: number, redactor: Redactor): FileReadView {
  const shown = redactor.window(head, 0, Math.min(maxBytes, head.length), { cutAfter: head.length < size });
  const text = isText(shown.bytes);
  return {
    size,
    truncated: shown.end < size,
    encoding: text ? "utf8" : "base64",
    content: shown.bytes.toString(text ? "utf8" : "base64"),
  };
}
