import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import type { Redactor } from "./secret-redaction.js";
import { isText } from "./text-content.js";

/** One entry of a tree being diffed (a tar entry, or a file read for a disk diff). */
export interface TreeEntry {
  type: string;
  mode: number;
  data?: Buffer;
  linkpath?: string;
  /** A file too large to pull for a diff: shown like a binary file. */
  tooLarge?: boolean;
}

/**
 * jsdiff, loaded on the first patch: it is ~20 modules, and a diff --summary, an export or a push
 * (which load this module with the rest of the tree code) never makes a patch.
 */
let jsdiff: typeof import("diff") | undefined;
const diffLibrary = () => (jsdiff ??= createRequire(import.meta.url)("diff") as typeof import("diff"));

function describe(entry: TreeEntry): string {
  if (entry.type === "SymbolicLink") return `symlink -> ${entry.linkpath}`;
  if (entry.data) return isText(entry.data) ? entry.data.toString("utf8") : `binary ${createHash("sha256").update(entry.data).digest("hex").slice(0, 12)}`;
  return entry.type.toLowerCase();
}

/** One changed entry as a git-like patch (secrets redacted from its name, contents and link target). */
export function formatFileDiff(
  originalPath: string,
  a: TreeEntry | undefined,
  b: TreeEntry | undefined,
  redactor: Redactor,
): { path: string; status: "added" | "modified" | "deleted"; binary: boolean; patch: string } {
  const path = redactor.text(originalPath);
  const status = !a ? "added" : !b ? "deleted" : "modified";
  const binary = Boolean(a?.tooLarge || b?.tooLarge || (a?.data && !isText(a.data)) || (b?.data && !isText(b.data)));
  if (binary)
    return {
      path,
      status,
      binary,
      patch: `diff --pyro a/${path} b/${path}\nBinary files ${a ? `a/${path}` : "/dev/null"} and ${b ? `b/${path}` : "/dev/null"} differ\n`,
    };
  const modeNote = a && b && a.mode !== b.mode ? `old mode ${a.mode.toString(8)}\nnew mode ${b.mode.toString(8)}\n` : "";
  const shown = (entry: TreeEntry | undefined) => (entry ? redactor.text(describe(entry)) : "");
  const text = diffLibrary().createTwoFilesPatch(a ? `a/${path}` : "/dev/null", b ? `b/${path}` : "/dev/null", shown(a), shown(b), undefined, undefined, {
    context: 3,
  });
  // jsdiff starts with an "Index:"/separator preamble; keep git-like headers only.
  return {
    path,
    status,
    binary,
    patch:
      modeNote +
      text
        .split("\n")
        .filter((l) => !l.startsWith("Index:") && !/^=+$/.test(l))
        .join("\n"),
  };
}
