import { lstat, mkdtemp, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import { assertOutputFree, publishNewFile } from "../storage/new-host-file.js";
import { diskChain } from "../storage/qcow2-backing-chain.js";
import { entryType, Ext4Image, type DiskEntryType } from "./disk-image.js";
import { relativeToWorkspace, workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { diskPath, workspaceDiskPath } from "./workspace-disk-files.js";
import { reconcileVm, withLockedWorkspace, type WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import { FILE_READ_DEFAULT_MAX_BYTES, fileReadView } from "./file-read-view.js";
import { Redactor } from "./secret-redaction.js";
import { loadRedactedValues } from "./workspace-secrets.js";

/** Runtime state pyro keeps in the guest outside /workspace; never part of a disk export. */
const RUNTIME_PATHS = ["/run/pyro-secrets", "/run/pyro-services"];

/** qemu-img converts a whole disk; debugfs edits a copy in place (export). Both stay within these. */
const CONVERT_TIMEOUT_MS = 600_000;
const SCRUB_TIMEOUT_MS = 120_000;
const DISK_TOOL_LIMITS = { cpuSeconds: 600, addressSpaceBytes: 4 * 2 ** 30 };
const MAX_LISTED_ENTRIES = 10_000;
const RAW_NAME = "disk.raw";

/** The raw copy a sandboxed tool left in scratch, checked to be a plain file before pyro touches it. */
async function sandboxOutputFile(scratch: string, name: string): Promise<string> {
  const path = join(scratch, name);
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isFile()) throw new PyroError("HOST_COMMAND_FAILED", `the disk tool did not leave a plain ${name} in its output directory`);
  return path;
}

/**
 * Runs `fn` on a raw copy of a stopped workspace's disk, made and read with userspace tools inside
 * host-sandbox: the image is never mounted on the host, never booted, and never parsed by an
 * unconfined tool.
 */
async function withRawDisk<T>(
  ctx: WorkspaceContext,
  ref: string,
  fn: (record: WorkspaceRecord, raw: string, scratch: string, redactor: Redactor, view: ImageView) => Promise<T>,
): Promise<T> {
  return withLockedWorkspace(ctx, ref, async (record) => {
    if (await reconcileVm(ctx, record)) {
      throw new PyroError(
        "WORKSPACE_RUNNING",
        `workspace ${record.id} is running; disk tools read stopped workspaces (stop it with 'pyro workspace stop ${record.id}', or use the file tools)`,
      );
    }
    const scratch = await mkdtemp(join(ctx.store.dir(record.id), ".disk-"));
    try {
      // /workspace is its own disk (read directly), or a directory of the root disk (older workspaces).
      const ownDisk = record.disk_gib !== null;
      const chain = await diskChain(ownDisk ? workspaceDiskPath(ctx, record.id) : diskPath(ctx, record.id));
      const converted = await runSandboxed({
        tool: requireExecutable("qemu-img", "qemu-utils"),
        args: ["convert", "-O", "raw", chain.files[0]!, `${SANDBOX_OUTPUT_DIR}/${RAW_NAME}`],
        readOnlyFiles: chain.files,
        outputDir: scratch,
        timeoutMs: CONVERT_TIMEOUT_MS,
        limits: { ...DISK_TOOL_LIMITS, fileSizeBytes: chain.virtualSize },
      });
      if (converted.exitCode !== 0) throw sandboxFailure(converted, "converting the workspace disk to raw");
      const raw = await sandboxOutputFile(scratch, RAW_NAME);
      return await fn(record, raw, scratch, new Redactor(await loadRedactedValues(ctx, record.id)), ownDisk ? WORKSPACE_DISK_VIEW : ROOT_DISK_VIEW);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });
}

/** Where a /workspace path lies in the image read: the same path on the root disk, its tail on the /workspace disk. */
interface ImageView {
  toImage(guestPath: string): string;
  toGuest(imagePath: string): string;
  /** Whether the image holds the whole root filesystem (pyro's runtime state is scrubbed from exports). */
  wholeRoot: boolean;
}
const ROOT_DISK_VIEW: ImageView = { toImage: (p) => p, toGuest: (p) => p, wholeRoot: true };
const WORKSPACE_DISK_VIEW: ImageView = {
  toImage: (p) => p.slice(WORKSPACE_ROOT.length) || "/",
  toGuest: (p) => `${WORKSPACE_ROOT}${p === "/" ? "" : p}`,
  wholeRoot: false,
};

export interface DiskEntry {
  path: string;
  type: DiskEntryType;
  mode: string;
  size: number;
}

function symlinkRefused(guestPath: string): PyroError {
  return new PyroError(
    "PATH_OUTSIDE_WORKSPACE",
    `${relativeToWorkspace(guestPath)} is a symbolic link on the disk; disk tools do not follow links (name the link's target inside /workspace)`,
    { path: guestPath },
  );
}

/** Lists a workspace directory in a raw image (breadth first, symlinks listed, never followed). */
export async function listImage(image: Ext4Image, guestPath: string, recursive: boolean): Promise<{ entries: DiskEntry[]; truncated: boolean }> {
  const top = await image.lookup(guestPath);
  if (entryType(top.mode) === "symlink") throw symlinkRefused(guestPath);
  if (entryType(top.mode) !== "directory")
    throw new PyroError("GUEST_OPERATION_FAILED", `${relativeToWorkspace(guestPath) || "."} is not a directory on the disk`);
  const out: DiskEntry[] = [];
  const seen = new Set<number>([top.inode]);
  let level: { inode: number; path: string }[] = [{ inode: top.inode, path: guestPath }];
  while (level.length && out.length < MAX_LISTED_ENTRIES) {
    const listings = await image.listInodes(level.map((d) => d.inode));
    const next: typeof level = [];
    for (const dir of level) {
      for (const entry of listings.get(dir.inode) ?? []) {
        if (out.length >= MAX_LISTED_ENTRIES) break;
        const path = `${dir.path}/${entry.name}`;
        const type = entryType(entry.mode);
        out.push({ path, type, mode: (entry.mode & 0o7777).toString(8).padStart(4, "0"), size: entry.size });
        // A damaged image can link a directory into itself; each inode is walked once.
        if (recursive && type === "directory" && !seen.has(entry.inode)) {
          seen.add(entry.inode);
          next.push({ inode: entry.inode, path });
        }
      }
    }
    if (!recursive) break;
    level = next;
  }
  return { entries: out, truncated: out.length >= MAX_LISTED_ENTRIES };
}

/** Reads the start of a workspace file in a raw image; links are refused, not followed. */
export async function readImage(image: Ext4Image, guestPath: string, maxBytes: number): Promise<{ data: Buffer; size: number; truncated: boolean }> {
  const entry = await image.lookup(guestPath);
  const type = entryType(entry.mode);
  if (type === "symlink") throw symlinkRefused(guestPath);
  if (type !== "file") throw new PyroError("GUEST_OPERATION_FAILED", `${relativeToWorkspace(guestPath)} is a ${type} on the disk, not a file`);
  const { data, truncated } = await image.readInode(entry, maxBytes);
  return { data, size: entry.size, truncated };
}

export async function diskList(ctx: WorkspaceContext, ref: string, path = ".", options: { recursive?: boolean } = {}) {
  const root = workspacePath(path);
  return withRawDisk(ctx, ref, async (record, raw, _scratch, redactor, view) => {
    const { entries, truncated } = await listImage(new Ext4Image(raw), view.toImage(root), options.recursive ?? false);
    // Names are the guest's: one can hold a secret the guest was given, as a live listing's can.
    return redactor.deep({
      workspace_id: record.id,
      path: relativeToWorkspace(root) || ".",
      count: entries.length,
      truncated,
      entries: entries.map((e) => ({ ...e, path: relativeToWorkspace(view.toGuest(e.path.replace(/^\/\//, "/"))) })),
    });
  });
}

export async function diskRead(ctx: WorkspaceContext, ref: string, path: string, options: { maxBytes?: number } = {}) {
  const guestPath = workspacePath(path);
  const maxBytes = options.maxBytes ?? FILE_READ_DEFAULT_MAX_BYTES;
  if (!(maxBytes > 0)) throw new PyroError("INVALID_ARGUMENT", "max bytes must be positive");
  return withRawDisk(ctx, ref, async (record, raw, _scratch, redactor, view) => {
    // Read past the cut, so a secret crossing it is seen (and redacted) whole.
    const read = await readImage(new Ext4Image(raw), view.toImage(guestPath), maxBytes + redactor.contextBytes);
    return { workspace_id: record.id, path: relativeToWorkspace(guestPath), ...fileReadView(read.data, read.size, maxBytes, redactor) };
  });
}

/**
 * Writes the workspace's filesystem as a raw ext4 image: the /workspace disk where the workspace
 * has one, else the root filesystem with pyro's runtime state and secrets removed.
 */
export async function diskExport(ctx: WorkspaceContext, ref: string, outputPath: string) {
  const output = resolve(outputPath);
  await assertOutputFree(output);
  return withRawDisk(ctx, ref, async (record, raw, scratch, _redactor, view) => {
    if (!view.wholeRoot) {
      await publishNewFile(output, (scratchFile) =>
        runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", raw, scratchFile]).then(() => undefined),
      );
      return { workspace_id: record.id, output, format: "raw ext4 (/workspace)", bytes: (await lstat(output)).size };
    }
    // Secrets and service state live on tmpfs and never reach the disk; scrub anyway, belt and braces.
    // The paths are pyro's own constants (no guest name is quoted into the script).
    const script = RUNTIME_PATHS.map((p) => `rm "${p}"\nrmdir "${p}"`).join("\n");
    const scrub = await runSandboxed({
      tool: requireExecutable("debugfs", "e2fsprogs"),
      args: ["-w", "-f", "-", `${SANDBOX_OUTPUT_DIR}/${RAW_NAME}`],
      outputDir: scratch,
      input: script + "\n",
      timeoutMs: SCRUB_TIMEOUT_MS,
      limits: { ...DISK_TOOL_LIMITS, fileSizeBytes: (await lstat(raw)).size },
    });
    if (scrub.signal) throw sandboxFailure(scrub, "removing pyro's runtime state from the exported disk");
    const image = await sandboxOutputFile(scratch, RAW_NAME);
    await publishNewFile(output, (scratchFile) =>
      runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", image, scratchFile]).then(() => undefined),
    );
    const size = (await lstat(output)).size;
    return { workspace_id: record.id, output, format: "raw ext4", bytes: size };
  });
}
