import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { createReadStream, createWriteStream } from "node:fs";
import { link, lstat, mkdir, rename, rm, symlink, unlink } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { diskChain } from "../storage/qcow2-backing-chain.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { Ext4Image } from "./disk-image.js";
import { WORKSPACE_ROOT } from "./guest-paths.js";
import type { Redactor } from "./secret-redaction.js";
import type { ManifestEntry } from "./tree-manifest.js";
import { guestManifest } from "./workspace-diff.js";
import { workspaceDiskPath } from "./workspace-boot.js";
import type { WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";

/**
 * Exports a directory of a workspace whose /workspace is its own disk, at host speed and with
 * bounded memory, from the disk itself: the guest is synced and paused just long enough to copy the
 * top qcow2 layer (the layers below never change), then the copy is converted to raw, its journal
 * replayed and the directory dumped with debugfs — all inside host-sandbox, since the guest wrote
 * every block. The dump is made a tar by streaming from the host's disk to the output file.
 * Hardlinks are restored from the guest's manifest (debugfs dumps each name as its own file);
 * directory times are not kept (debugfs sets them when it creates them).
 */

const TOOL_LIMITS = { cpuSeconds: 1800, addressSpaceBytes: 4 * 2 ** 30 };
const TOOL_TIMEOUT_MS = 1_800_000;

/** The guest's /workspace disk as a raw image in `scratch`, consistent with a moment the guest was paused. */
async function pausedDiskCopy(ctx: WorkspaceContext, record: WorkspaceRecord, vm: RunningVm, scratch: string): Promise<{ raw: string; bytes: number }> {
  const top = join(scratch, "top.qcow2");
  await vm.agent.sync();
  await vm.pause();
  try {
    await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", workspaceDiskPath(ctx, record.id), top], { privateFiles: true });
  } finally {
    await vm.resume();
  }
  const chain = await diskChain(top);
  const out = join(scratch, "out");
  await mkdir(out, { mode: 0o700 });
  const converted = await runSandboxed({
    tool: requireExecutable("qemu-img", "qemu-utils"),
    args: ["convert", "-O", "raw", top, `${SANDBOX_OUTPUT_DIR}/disk.raw`],
    readOnlyFiles: chain.files,
    outputDir: out,
    timeoutMs: TOOL_TIMEOUT_MS,
    limits: { ...TOOL_LIMITS, fileSizeBytes: chain.virtualSize },
  });
  if (converted.exitCode !== 0) throw sandboxFailure(converted, "copying the workspace disk");
  await rm(top, { force: true });
  const raw = join(out, "disk.raw");
  if (!(await lstat(raw).catch(() => undefined))?.isFile()) throw new PyroError("HOST_COMMAND_FAILED", "the disk copy is not a plain file");
  return { raw, bytes: chain.virtualSize };
}

/** debugfs on the disk copy in `out` (writable: the journal replay writes it). */
function debugfs(out: string, script: string, bytes: number) {
  return runSandboxed({
    tool: requireExecutable("debugfs", "e2fsprogs"),
    args: ["-w", "-f", "-", `${SANDBOX_OUTPUT_DIR}/disk.raw`],
    outputDir: out,
    input: script,
    timeoutMs: TOOL_TIMEOUT_MS,
    limits: { ...TOOL_LIMITS, fileSizeBytes: bytes },
  });
}

/** Applies what the guest committed to the journal but ext4 had not yet written in place. */
async function replayJournal(out: string, bytes: number): Promise<void> {
  const result = await debugfs(out, "journal_run\n", bytes);
  if (result.signal || result.exitCode !== 0) throw sandboxFailure(result, "replaying the workspace disk's journal");
}

async function dumpDirectory(out: string, inode: number, bytes: number): Promise<string> {
  const result = await debugfs(out, `rdump <${inode}> ${SANDBOX_OUTPUT_DIR}\n`, bytes);
  if (result.signal) throw sandboxFailure(result, "reading the workspace disk");
  const dumped = join(out, `<${inode}>`);
  if (!(await lstat(dumped).catch(() => undefined))?.isDirectory()) throw sandboxFailure(result, "reading the workspace disk");
  return dumped;
}

/** Names under `tree` that the guest had as hardlinks of one inode become hardlinks again. */
async function relink(tree: string, entries: ManifestEntry[], prefix: string): Promise<void> {
  const byInode = new Map<number, string[]>();
  for (const e of entries) {
    if (e.type !== "f" || e.nlink < 2) continue;
    if (prefix && !e.path.startsWith(`${prefix}/`)) continue;
    const rel = prefix ? e.path.slice(prefix.length + 1) : e.path;
    byInode.set(e.ino, [...(byInode.get(e.ino) ?? []), rel]);
  }
  for (const names of byInode.values()) {
    const [first, ...rest] = names;
    for (const name of rest) {
      const st = await lstat(join(tree, name)).catch(() => undefined);
      if (!st?.isFile()) continue; // changed since the manifest was taken
      await unlink(join(tree, name));
      await link(join(tree, first!), join(tree, name));
    }
  }
}

/**
 * Applies secret redaction to a dumped tree in place: file contents (streamed), names and link
 * targets. A name that redaction makes equal to another gets a numbered suffix.
 */
async function redactTree(tree: string, redactor: Redactor): Promise<void> {
  const pending = [tree];
  while (pending.length) {
    const dir = pending.pop()!;
    for (const name of readdirSync(dir)) {
      let path = join(dir, name);
      const shown = redactor.text(name);
      if (shown !== name) {
        let target = join(dir, shown);
        for (let n = 2; lstatSync(target, { throwIfNoEntry: false }); n++) target = join(dir, `${shown}.${n}`);
        await rename(path, target);
        path = target;
      }
      const st = lstatSync(path);
      if (st.isDirectory()) pending.push(path);
      else if (st.isSymbolicLink()) {
        const to = readlinkSync(path);
        if (redactor.text(to) !== to) {
          await unlink(path);
          await symlink(redactor.text(to), path);
        }
      } else if (st.isFile()) {
        const redacted = `${path}.pyro-redacted`;
        const stream = redactor.stream();
        await pipeline(
          createReadStream(path),
          async function* (source: AsyncIterable<Buffer>) {
            for await (const piece of source) yield stream.push(piece);
            yield stream.end();
          },
          createWriteStream(redacted, { mode: st.mode & 0o777 }),
        );
        await rename(redacted, path);
      }
    }
  }
}

/** Writes `guestPath` (a directory) of a disk-backed workspace to `scratchFile` as a tar; returns its size. */
export async function exportDirectoryFromDisk(ctx: WorkspaceContext, record: WorkspaceRecord, vm: RunningVm, guestPath: string, redactor: Redactor, scratchFile: string): Promise<number> {
  const prefix = guestPath === WORKSPACE_ROOT ? "" : guestPath.slice(WORKSPACE_ROOT.length + 1);
  const manifest = await guestManifest(vm.agent);
  const scratch = await makePrivateTempDir(ctx.store.dir(record.id), ".disk-");
  try {
    const { raw, bytes } = await pausedDiskCopy(ctx, record, vm, scratch);
    const out = join(scratch, "out");
    await replayJournal(out, bytes);
    const entry = await new Ext4Image(raw).lookup(prefix ? `/${prefix}` : "/");
    const tree = await dumpDirectory(out, entry.inode, bytes);
    await rm(raw, { force: true });
    await relink(tree, manifest, prefix);
    if (redactor.active) await redactTree(tree, redactor);
    // GNU tar on pyro's own dump (never following a link), written straight to the file: modes and
    // hardlinks exact, owners root as in the guest, host speed.
    await runHostCommand(requireExecutable("tar", "tar"), ["-c", "-f", scratchFile, "-C", tree, "--numeric-owner", "--owner=0", "--group=0", "--format=gnu", "."], { timeoutMs: 1_800_000 });
    return (await lstat(scratchFile)).size;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
