/**
 * Parsing and checking what pyro hands to or takes from git for project seeds: `ls-files -z`
 * output (names from a checkout pyro does not control) and the --repo-url / --repo-ref a user
 * typed. Pure functions, so they can be property-tested.
 */
import { resolve } from "node:path";
import { PyroError } from "../errors.js";

/** A listed name pyro will not copy, and why (the seed result lists these). */
export interface SkippedSeedFile {
  path: string;
  reason: string;
}

/**
 * Splits `git ls-files -z` output into relative paths safe to resolve under the checkout root:
 * valid UTF-8, no empty, '.', '..' or '.git' component, not absolute. Anything else is skipped
 * (with its name shown escaped) rather than failing the whole seed. Duplicates (a conflicted
 * file is listed once per stage) appear once.
 */
export function parseLsFilesZ(output: Buffer): { paths: string[]; skipped: SkippedSeedFile[] } {
  const paths = new Set<string>();
  const skipped: SkippedSeedFile[] = [];
  let start = 0;
  while (start < output.length) {
    let end = output.indexOf(0, start);
    if (end === -1) end = output.length; // a final name without its NUL (cut short): still a name
    const raw = output.subarray(start, end);
    start = end + 1;
    if (raw.length === 0) continue;
    const text = new TextDecoder("utf-8", { fatal: false }).decode(raw);
    if (!Buffer.from(text, "utf8").equals(raw)) {
      skipped.push({ path: JSON.stringify(text).slice(1, -1), reason: "name is not valid UTF-8" });
      continue;
    }
    // git never lists its own directory; a name inside one (any case: case-insensitive filesystems) is refused.
    const why = unsafeRelativePath(text) ?? (text.split("/").some((part) => part.toLowerCase() === ".git") ? "inside .git" : undefined);
    if (why) {
      skipped.push({ path: JSON.stringify(text).slice(1, -1), reason: why });
      continue;
    }
    paths.add(text);
  }
  return { paths: [...paths], skipped };
}

/** Why `path` cannot name something inside a root (undefined when it can): absolute, or an empty, '.' or '..' component. */
export function unsafeRelativePath(path: string): string | undefined {
  if (path.startsWith("/")) return "absolute path";
  // Control characters never come from a sane checkout and break one-line reports.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is this check's job
  if (/[\u0000-\u001f\u007f]/.test(path)) return "name contains control characters";
  for (const part of path.split("/")) {
    if (part === "" || part === "." || part === "..") return `path component '${part}' is not allowed`;
  }
  return undefined;
}

/** Transports git may use for --repo-url: remote helpers such as ext:: run commands and are refused. */
export const REPO_URL_SCHEMES = ["https", "http", "ssh", "git", "file"] as const;
const MAX_URL_LENGTH = 2048;

export type RepoLocation = { kind: "url"; url: string } | { kind: "local"; path: string };

function badUrl(url: string, why: string): PyroError {
  return new PyroError(
    "INVALID_ARGUMENT",
    `--repo-url '${url.length > 200 ? `${url.slice(0, 200)}…` : url}' is not a Git repository URL (${why}); use https://, ssh://, git://, file:// or user@host:path, or a local path`,
  );
}

/**
 * Checks a --repo-url before git sees it. Accepted: URLs with one of REPO_URL_SCHEMES,
 * scp-like `user@host:path`, and local paths (made absolute against `cwd`). Refused: remote
 * helper syntax (`ext::…`), other schemes, anything git could read as an option, control
 * characters or whitespace.
 */
export function parseRepoUrl(url: string, cwd: string = process.cwd()): RepoLocation {
  if (url.length === 0) throw badUrl(url, "it is empty");
  if (url.length > MAX_URL_LENGTH) throw badUrl(url, `it is longer than ${MAX_URL_LENGTH} characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is this check's job
  if (/[\u0000-\u0020\u007f]/.test(url)) throw badUrl(url, "it contains whitespace or control characters");
  if (url.startsWith("-")) throw badUrl(url, "it starts with '-'");
  if (url.includes("::")) throw badUrl(url, "remote helper transports ('<helper>::…') are not allowed");
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url);
  if (scheme) {
    const name = scheme[1]!.toLowerCase();
    if (!(REPO_URL_SCHEMES as readonly string[]).includes(name)) throw badUrl(url, `scheme '${name}' is not one git clones from`);
    const rest = url.slice(scheme[0].length);
    if (name === "file") {
      if (!rest.startsWith("/")) throw badUrl(url, "file:// needs an absolute path");
      return { kind: "url", url };
    }
    if (!/^[^/?#]+\/[^?#]*[^/?#]/.test(rest)) throw badUrl(url, "it has no host and repository path");
    return { kind: "url", url };
  }
  if (url.startsWith("/") || url.startsWith("./") || url.startsWith("../")) return { kind: "local", path: resolve(cwd, url) };
  // scp-like syntax, [user@]host:path: what git reads it as whenever a colon comes before any slash.
  const scpLike = /^(?:[A-Za-z0-9._~-]+@)?[A-Za-z0-9.-]+:(.+)$/.exec(url);
  if (scpLike) return { kind: "url", url };
  if (/^[^/]*:/.test(url)) throw badUrl(url, "it is neither a URL nor a path");
  return { kind: "local", path: resolve(cwd, url) };
}

const FULL_COMMIT = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** Whether a ref is a full commit id (immutable: a clone of it can be reused). */
export function isFullCommitId(ref: string): boolean {
  return FULL_COMMIT.test(ref);
}

/**
 * Checks a --repo-ref (a branch, tag or full commit id) with the rules of `git check-ref-format`
 * that matter here, and refuses what git could read as an option.
 */
export function checkRepoRef(ref: string): string {
  const fail = (why: string) => new PyroError("INVALID_ARGUMENT", `--repo-ref '${ref.slice(0, 200)}' is not a branch, tag or commit id (${why})`);
  if (ref.length === 0 || ref.length > 255) throw fail("length must be 1-255");
  if (ref.startsWith("-")) throw fail("it starts with '-'");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is this check's job
  if (/[\u0000-\u0020\u007f~^:?*[\\]/.test(ref)) throw fail("it contains a space, control character or one of ~^:?*[\\");
  if (ref.includes("..") || ref.includes("@{") || ref.includes("//")) throw fail("it contains '..', '@{' or '//'");
  if (ref === "@" || ref.startsWith("/") || ref.endsWith("/") || ref.endsWith(".") || ref.endsWith(".lock")) throw fail("it starts or ends badly");
  if (ref.split("/").some((part) => part.startsWith("."))) throw fail("a component starts with '.'");
  return ref;
}
