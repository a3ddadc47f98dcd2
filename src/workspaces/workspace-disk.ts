import { mkdtemp, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand, runHostCommandRaw } from "../process/host-command.js";
import { relativeToWorkspace, workspacePath } from "./guest-paths.js";
import { diskPath } from "./workspace-boot.js";
import { reconcileVm, withLockedWorkspace, type WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import { fileReadView } from "./file-read-view.js";
import { Redactor } from "./secret-redaction.js";
import { loadSecrets } from "./workspace-secrets.js";

/** Runtime state pyro keeps in the guest outside /workspace; never part of a disk export. */
const RUNTIME_PATHS = ["/run/pyro-secrets", "/run/pyro-services"];

/**
 * Runs `fn` on a raw copy of a stopped workspace's disk, read with userspace tools only: the image
 * is never mounted on the host and never booted.
 */
async function withRawDisk<T>(ctx: WorkspaceContext, ref: string, fn: (record: WorkspaceRecord, raw: string, redactor: Redactor) => Promise<T>): Promise<T> {
  return withLockedWorkspace(ctx, ref, async (record) => {
    if (await reconcileVm(ctx, record)) {
      throw new PyroError("WORKSPACE_RUNNING", `workspace ${record.id} is running; disk tools read stopped workspaces (stop it with 'pyro workspace stop ${record.id}', or use the file tools)`);
    }
    const scratch = await mkdtemp(join(ctx.store.dir(record.id), ".disk-"));
    try {
      const raw = join(scratch, "disk.raw");
      await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["convert", "-O", "raw", diskPath(ctx, record.id), raw], { timeoutMs: 600_000 });
      return await fn(record, raw, new Redactor(await loadSecrets(ctx, record.id)));
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });
}

function debugfs(): string {
  return requireExecutable("debugfs", "e2fsprogs");
}

interface DiskEntry {
  path: string;
  type: "file" | "directory" | "symlink" | "other";
  mode: string;
  size: number;
}

/** `ls -p` prints /inode/mode/uid/gid/name/size/ per entry. */
async function listDir(raw: string, dir: string): Promise<DiskEntry[]> {
  const r = await runHostCommandRaw(debugfs(), ["-R", `ls -p "${dir}"`, raw], { timeoutMs: 60_000 });
  if (/File not found|not found by ext2_lookup/.test(r.stderr)) throw new PyroError("GUEST_OPERATION_FAILED", `${relativeToWorkspace(dir) || "."} does not exist on the disk`);
  const entries: DiskEntry[] = [];
  for (const line of r.stdout.toString("utf8").split("\n")) {
    const parts = line.split("/");
    if (parts.length < 7) continue;
    const [, , modeText, , , name, size] = parts;
    if (!name || name === "." || name === "..") continue;
    const mode = parseInt(modeText ?? "0", 8);
    const kind = (mode & 0o170000) >>> 12;
    entries.push({
      path: dir === "/" ? `/${name}` : `${dir}/${name}`,
      type: kind === 0o4 ? "directory" : kind === 0o10 ? "file" : kind === 0o12 ? "symlink" : "other",
      mode: (mode & 0o7777).toString(8).padStart(4, "0"),
      size: Number(size),
    });
  }
  return entries;
}

export async function diskList(ctx: WorkspaceContext, ref: string, path = ".", options: { recursive?: boolean } = {}) {
  const root = workspacePath(path);
  return withRawDisk(ctx, ref, async (record, raw) => {
    const out: DiskEntry[] = [];
    const queue = [root];
    while (queue.length && out.length < 10_000) {
      const dir = queue.shift()!;
      for (const entry of await listDir(raw, dir)) {
        out.push(entry);
        if (options.recursive && entry.type === "directory") queue.push(entry.path);
      }
    }
    return { workspace_id: record.id, path: relativeToWorkspace(root) || ".", count: out.length, entries: out.map((e) => ({ ...e, path: relativeToWorkspace(e.path) })) };
  });
}

export async function diskRead(ctx: WorkspaceContext, ref: string, path: string, options: { maxBytes?: number } = {}) {
  const guestPath = workspacePath(path);
  const maxBytes = options.maxBytes ?? 65_536;
  return withRawDisk(ctx, ref, async (record, raw, redactor) => {
    const r = await runHostCommandRaw(debugfs(), ["-R", `cat "${guestPath}"`, raw], { timeoutMs: 60_000, maxOutputBytes: 64 * 1024 * 1024 });
    if (/File not found|not found by ext2_lookup/.test(r.stderr)) throw new PyroError("GUEST_OPERATION_FAILED", `${relativeToWorkspace(guestPath)} does not exist on the disk`);
    return { workspace_id: record.id, path: relativeToWorkspace(guestPath), ...fileReadView(r.stdout, r.stdout.length, maxBytes, redactor) };
  });
}

/** Writes the workspace's filesystem as a raw ext4 image, pyro's runtime state and secrets removed. */
export async function diskExport(ctx: WorkspaceContext, ref: string, outputPath: string) {
  const output = resolve(outputPath);
  if (await stat(output).then(() => true, () => false)) throw new PyroError("INVALID_ARGUMENT", `${output} already exists; choose another --output`);
  return withRawDisk(ctx, ref, async (record, raw) => {
    // Secrets and service state live on tmpfs and never reach the disk; scrub anyway, belt and braces.
    const script = RUNTIME_PATHS.map((p) => `rm "${p}"\nrmdir "${p}"`).join("\n");
    await runHostCommandRaw(debugfs(), ["-w", "-f", "-", raw], { input: script + "\n", timeoutMs: 60_000 });
    await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", raw, output]);
    const size = (await stat(output)).size;
    return { workspace_id: record.id, output, format: "raw ext4", bytes: size };
  });
}
