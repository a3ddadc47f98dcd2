import { PyroError } from "../errors.js";
import { requireExecutable } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, type SandboxLimits } from "../process/host-sandbox.js";
import { WORKSPACE_ROOT } from "./guest-paths.js";

/**
 * Reads a raw ext4 image the guest wrote, with debugfs confined by host-sandbox. Paths are resolved
 * by pyro, one directory at a time from the root inode, and debugfs is only ever given inode
 * numbers (`<N>`): no guest name reaches debugfs's command parser, and debugfs never follows a
 * symlink (its name lookup follows links in the middle of a path; an inode walk cannot). Every
 * listing is parsed from `ls -l`, which escapes bytes outside printable ASCII, so one line is one
 * entry whatever the names contain.
 */

const ROOT_INODE = 2;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** Directories listed per debugfs run when walking a tree. */
const DIRS_PER_RUN = 256;
const DEBUGFS_TIMEOUT_MS = 60_000;
const DEBUGFS_LIMITS: SandboxLimits = { cpuSeconds: 30, addressSpaceBytes: 2 * 2 ** 30, fileSizeBytes: 0 };

export type DiskEntryType = "file" | "directory" | "symlink" | "other";

export interface DiskImageEntry {
  name: string;
  inode: number;
  mode: number;
  size: number;
}

export function entryType(mode: number): DiskEntryType {
  const kind = mode & S_IFMT;
  return kind === S_IFDIR ? "directory" : kind === S_IFREG ? "file" : kind === S_IFLNK ? "symlink" : "other";
}

/** debugfs prints `\xNN` for control bytes, bytes ≥ 0x7f and the backslash itself. */
export function unescapeDebugfsName(text: string): string {
  const bytes: number[] = [];
  const raw = Buffer.from(text, "latin1");
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x5c && raw[i + 1] === 0x78 && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
      bytes.push(parseInt(text.slice(i + 2, i + 4), 16));
      i += 3;
    } else bytes.push(raw[i]!);
  }
  return Buffer.from(bytes).toString("utf8");
}

const LONG_LINE = /^\s*(\d+)\s+([0-7]+)\s+\(\d+\)\s+\d+\s+\d+\s+(\d+)\s+\d+-[A-Za-z]{3}-\d+ \d+:\d+ (.*)$/;

/** Parses one directory's `ls -l` output; lines that are not entries are ignored. */
export function parseLongListing(text: string): DiskImageEntry[] {
  const entries: DiskImageEntry[] = [];
  for (const line of text.split("\n")) {
    const m = LONG_LINE.exec(line);
    if (!m) continue;
    const name = unescapeDebugfsName(m[4]!);
    if (name === "." || name === ".." || name === "" || name.includes("/") || name.includes("\0")) continue;
    entries.push({ inode: Number(m[1]), mode: parseInt(m[2]!, 8), size: Number(m[3]), name });
  }
  return entries;
}

/** Splits `debugfs -f -` output into the text that follows each echoed command (names never span lines). */
export function splitSections(text: string, commands: string[]): Map<string, string> {
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of text.split("\n")) {
    const echoed = line.startsWith("debugfs: ") ? line.slice("debugfs: ".length) : undefined;
    if (echoed !== undefined && commands.includes(echoed) && !sections.has(echoed)) {
      current = [];
      sections.set(echoed, current);
      continue;
    }
    current?.push(line);
  }
  return new Map([...sections].map(([cmd, lines]) => [cmd, lines.join("\n")]));
}

export class Ext4Image {
  constructor(private readonly raw: string) {}

  /** One debugfs run: a single request (`-R`, output is the request's alone) or a script of several. */
  private async debugfs(requests: string[], what: string, maxStdoutBytes?: number) {
    const single = requests.length === 1;
    const result = await runSandboxed({
      tool: requireExecutable("debugfs", "e2fsprogs"),
      args: single ? ["-R", requests[0]!, this.raw] : ["-f", "-", this.raw],
      readOnlyFiles: [this.raw],
      ...(single ? {} : { input: requests.join("\n") + "\n" }),
      timeoutMs: DEBUGFS_TIMEOUT_MS,
      limits: DEBUGFS_LIMITS,
      ...(maxStdoutBytes !== undefined ? { maxStdoutBytes } : {}),
    });
    if (result.signal || (result.exitCode !== 0 && !result.stdoutTruncated)) throw sandboxFailure(result, `reading the disk image (${what}) failed`);
    if (/Bad magic number|Filesystem not open|while trying to open/.test(result.stderr))
      throw new PyroError("HOST_COMMAND_FAILED", `the disk image is not a readable ext4 filesystem (${what}); it may be damaged`);
    return result;
  }

  /** Lists many directories (by inode) in as few debugfs runs as possible. */
  async listInodes(inodes: number[]): Promise<Map<number, DiskImageEntry[]>> {
    const out = new Map<number, DiskImageEntry[]>();
    for (let i = 0; i < inodes.length; i += DIRS_PER_RUN) {
      const batch = inodes.slice(i, i + DIRS_PER_RUN);
      const commands = batch.map((ino) => `ls -l <${ino}>`);
      const text = (await this.debugfs(commands, "listing")).stdout.toString("latin1");
      const sections = commands.length === 1 ? new Map([[commands[0]!, text]]) : splitSections(text, commands);
      for (const [k, ino] of batch.entries()) out.set(ino, parseLongListing(sections.get(commands[k]!) ?? ""));
    }
    return out;
  }

  async listInode(inode: number): Promise<DiskImageEntry[]> {
    return (await this.listInodes([inode])).get(inode) ?? [];
  }

  /**
   * Finds a guest path (absolute, normalised, under /workspace) by walking directories from the
   * root inode. Every component but the last must be a real directory; a symlink anywhere on the
   * way is refused rather than followed, like the live file tools do.
   */
  async lookup(guestPath: string): Promise<DiskImageEntry> {
    const parts = guestPath.split("/").filter(Boolean);
    let current: DiskImageEntry = { name: "/", inode: ROOT_INODE, mode: S_IFDIR, size: 0 };
    let walked = "";
    for (const part of parts) {
      if (entryType(current.mode) !== "directory") {
        const kind = entryType(current.mode);
        throw new PyroError(
          kind === "symlink" ? "PATH_OUTSIDE_WORKSPACE" : "GUEST_OPERATION_FAILED",
          kind === "symlink"
            ? `${displayPath(walked)} is a symbolic link on the disk; disk tools do not follow links (name the link's target inside /workspace)`
            : `${displayPath(walked)} is not a directory on the disk`,
          { path: walked },
        );
      }
      const found = (await this.listInode(current.inode)).find((e) => e.name === part);
      walked = `${walked}/${part}`;
      if (!found) throw new PyroError("GUEST_OPERATION_FAILED", `${displayPath(walked)} does not exist on the disk`, { path: walked, guestCode: "not_found" });
      current = found;
    }
    return current;
  }

  /**
   * Finds many paths (relative to the image's root, no symlink followed on the way) with one
   * batched directory listing per depth. Paths that do not resolve to an entry are left out.
   */
  async lookupMany(paths: string[]): Promise<Map<string, DiskImageEntry>> {
    const found = new Map<string, DiskImageEntry>();
    const dirs = new Map<string, number>([["", ROOT_INODE]]);
    const depth = Math.max(0, ...paths.map((p) => p.split("/").length));
    for (let level = 1; level <= depth; level++) {
      const wanted = new Set<string>();
      for (const p of paths) {
        const parts = p.split("/");
        if (parts.length >= level) wanted.add(parts.slice(0, level - 1).join("/"));
      }
      const parents = [...wanted].filter((d) => dirs.has(d));
      const listings = await this.listInodes(parents.map((d) => dirs.get(d)!));
      for (const parent of parents) {
        for (const entry of listings.get(dirs.get(parent)!) ?? []) {
          if (entry.name === "." || entry.name === "..") continue;
          const path = parent ? `${parent}/${entry.name}` : entry.name;
          found.set(path, entry);
          if (entryType(entry.mode) === "directory") dirs.set(path, entry.inode);
        }
      }
    }
    return new Map(paths.filter((p) => found.has(p)).map((p) => [p, found.get(p)!]));
  }

  /** The first `maxBytes` of a regular file's contents (by inode). */
  async readInode(entry: DiskImageEntry, maxBytes: number): Promise<{ data: Buffer; truncated: boolean }> {
    if (entryType(entry.mode) !== "file") throw new PyroError("INVALID_ARGUMENT", `${entry.name} is a ${entryType(entry.mode)}, not a file`);
    const result = await this.debugfs([`cat <${entry.inode}>`], "reading a file", maxBytes);
    return { data: result.stdout, truncated: result.stdoutTruncated || entry.size > result.stdout.length };
  }
}

function displayPath(guestPath: string): string {
  return guestPath === WORKSPACE_ROOT ? "." : guestPath.startsWith(`${WORKSPACE_ROOT}/`) ? guestPath.slice(WORKSPACE_ROOT.length + 1) : guestPath;
}
