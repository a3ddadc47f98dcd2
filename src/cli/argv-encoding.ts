import { readFileSync } from "node:fs";
import { isWellFormedText } from "../guest-protocol/request-limits.js";

const REPLACEMENT = "\uFFFD";

/**
 * Node decodes argv as UTF-8 and turns bytes that are not UTF-8 into U+FFFD, so an argument such as
 * a Latin-1 file name would reach the guest silently changed. pyro carries arguments as text, so
 * it refuses them instead. A genuine U+FFFD typed by the user is told apart from damage by the raw
 * bytes in /proc/self/cmdline where that exists. Returns the usage error to print, if any.
 */
export function damagedArgument(argv: readonly string[], rawCmdline: () => Buffer | undefined = procCmdline): string | undefined {
  const suspect = argv.findIndex((arg) => !isWellFormedText(arg) || arg.includes(REPLACEMENT));
  if (suspect < 0) return undefined;
  const arg = argv[suspect]!;
  if (isWellFormedText(arg)) {
    const raw = rawCmdline();
    // Every raw argument is valid UTF-8: the U+FFFD was really typed, nothing was lost.
    if (raw && rawArguments(raw).every(isUtf8)) return undefined;
  }
  return `argument ${suspect + 1} ('${arg}') is not valid UTF-8 text; pyro passes arguments to the guest as UTF-8, so re-encode it (e.g. iconv -t UTF-8) or put the bytes in a file and pass its name`;
}

function procCmdline(): Buffer | undefined {
  try {
    return readFileSync("/proc/self/cmdline");
  } catch {
    return undefined; // not Linux: trust the decoded text's U+FFFD as damage
  }
}

function rawArguments(cmdline: Buffer): Buffer[] {
  const args: Buffer[] = [];
  for (let start = 0; start < cmdline.length; ) {
    const end = cmdline.indexOf(0, start);
    const stop = end < 0 ? cmdline.length : end;
    args.push(cmdline.subarray(start, stop));
    start = stop + 1;
  }
  return args;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function isUtf8(bytes: Buffer): boolean {
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
