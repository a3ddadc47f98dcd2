import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, rename, rm, symlink, unlink } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { spawn } from "node:child_process";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { runSandboxed, sandboxArgs, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { diskChain } from "../storage/qcow2-backing-chain.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { RootedTree } from "../storage/rooted-path.js";
import { Ext4Image } from "./disk-image.js";
import { TAR_BLOCK, tarHeader } from "./tar-header.js";
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

/**
 * Names under `tree` that the guest had as hardlinks of one inode become hardlinks again. The dump
 * is the guest's disk and the manifest its agent's earlier reply: they need not agree (a directory
 * swapped for a symlink after the walk), so a name is relinked only where it is a regular file with
 * no symlink on the way, resolved inside the dump; anything else is left as dumped.
 */
export async function restoreHardlinks(tree: string, entries: ManifestEntry[], prefix: string): Promise<void> {
  const byInode = new Map<number, string[]>();
  for (const e of entries) {
    if (e.type !== "f" || e.nlink < 2) continue;
    if (prefix && !e.path.startsWith(`${prefix}/`)) continue;
    const rel = prefix ? e.path.slice(prefix.length + 1) : e.path;
    byInode.set(e.ino, [...(byInode.get(e.ino) ?? []), rel]);
  }
  const dump = new RootedTree(tree);
  const plainFile = async (name: string) => {
    const at = await dump.resolve(name, { followFinal: false });
    return at.relative === name && at.stats?.isFile() === true;
  };
  for (const [first, ...rest] of byInode.values()) {
    if (!(await plainFile(first!))) continue; // changed since the manifest was taken
    for (const name of rest) {
      if (await plainFile(name)) await dump.hardlink(name, first!);
    }
  }
}

/**
 * Applies secret redaction to a dumped tree in place: file contents (streamed), names and link
 * targets. A name that redaction makes equal to another gets a numbered suffix.
 */
export async function redactTree(tree: string, redactor: Redactor): Promise<void> {
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
        // The copy is created exclusively under a free name: the dump's own names (a symlink called
        // like the copy) must never be opened for writing.
        let redacted = `${path}.pyro-redacted`;
        for (let n = 2; lstatSync(redacted, { throwIfNoEntry: false }); n++) redacted = `${path}.pyro-redacted.${n}`;
        const stream = redactor.stream();
        await pipeline(
          createReadStream(path),
          async function* (source: AsyncIterable<Buffer>) {
            for await (const piece of source) yield stream.push(piece);
            yield stream.end();
          },
          createWriteStream(redacted, { mode: st.mode & 0o777, flags: "wx" }),
        );
        await rename(redacted, path);
      }
    }
  }
}

/**
 * Reads exactly the bytes asked for from a stream (debugfs's stdout), pulling more only when needed:
 * the tool blocks on its pipe while the output file is slow, so memory stays one chunk.
 */
class StreamReader {
  private buffered: Buffer[] = [];
  private length = 0;
  private done = false;
  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(bytes: number): Promise<boolean> {
    while (this.length < bytes && !this.done) {
      const next = await this.source.next();
      if (next.done) this.done = true;
      else {
        this.buffered.push(next.value);
        this.length += next.value.length;
      }
    }
    return this.length >= bytes;
  }

  /** Up to `max` bytes of what is buffered (at least one byte unless the stream ended); never copies. */
  async take(max: number): Promise<Buffer> {
    await this.fill(1);
    const first = this.buffered[0];
    if (!first) return Buffer.alloc(0);
    if (first.length <= max) {
      this.buffered.shift();
      this.length -= first.length;
      return first;
    }
    this.buffered[0] = first.subarray(max);
    this.length -= max;
    return first.subarray(0, max);
  }

  async expect(text: string): Promise<boolean> {
    const want = Buffer.from(text, "latin1");
    if (!(await this.fill(want.length))) return false;
    for (let at = 0; at < want.length; ) {
      const piece = await this.take(want.length - at);
      if (!piece.equals(want.subarray(at, at + piece.length))) return false;
      at += piece.length;
    }
    return true;
  }
}

/**
 * The tar of one directory of the image, generated straight from the manifest (names, modes, times,
 * link targets, hardlinks) and debugfs `cat` of each file (one sandboxed run for all of them): no
 * file is ever created on the host. The manifest was taken just before the pause; a file that
 * changed in between no longer lines up with what debugfs prints, and the export fails rather than
 * writing a wrong archive.
 */
async function* tarFromImage(out: string, entries: ManifestEntry[]): AsyncGenerator<Buffer> {
  const firstName = new Map<number, string>();
  const cats: ManifestEntry[] = [];
  for (const e of entries) {
    if (e.type === "f" && e.nlink > 1 && firstName.has(e.ino)) continue;
    if (e.type === "f") {
      cats.push(e);
      if (e.nlink > 1) firstName.set(e.ino, e.path);
    }
  }
  const child = spawn(
    requireExecutable("bwrap", "bubblewrap"),
    sandboxArgs({
      tool: requireExecutable("debugfs", "e2fsprogs"),
      args: ["-f", "-", `${SANDBOX_OUTPUT_DIR}/disk.raw`],
      outputDir: out,
      timeoutMs: TOOL_TIMEOUT_MS,
      limits: { ...TOOL_LIMITS, fileSizeBytes: 0 },
    }),
    { stdio: ["pipe", "pipe", "ignore"], detached: true, env: {} },
  );
  const kill = () => {
    try {
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    } catch {
      // gone
    }
  };
  const timer = setTimeout(kill, TOOL_TIMEOUT_MS);
  child.stdin!.on("error", () => undefined);
  child.stdin!.end(cats.map((e) => `cat <${e.ino}>`).join("\n") + "\n");
  const reader = new StreamReader(child.stdout![Symbol.asyncIterator]());
  const changed = () =>
    new PyroError("GUEST_OPERATION_FAILED", "/workspace changed while it was being exported; export again (or stop the processes writing to it)");
  try {
    const seen = new Map<number, string>();
    for (const e of entries) {
      const mtime = new Date(Number(e.mtimeNs / 1_000_000n));
      const common = { path: e.type === "d" ? `./${e.path}/` : `./${e.path}`, mode: e.mode, uid: 0, gid: 0, mtime };
      if (e.type === "d") yield tarHeader({ ...common, type: "Directory", size: 0 });
      else if (e.type === "l") yield tarHeader({ ...common, type: "SymbolicLink", linkpath: e.target, size: 0 });
      else if (e.type === "f" && e.nlink > 1 && seen.has(e.ino)) yield tarHeader({ ...common, type: "Link", linkpath: `./${seen.get(e.ino)}`, size: 0 });
      else if (e.type === "f") {
        if (e.nlink > 1) seen.set(e.ino, e.path);
        if (!(await reader.expect(`debugfs: cat <${e.ino}>\n`))) throw changed();
        yield tarHeader({ ...common, type: "File", size: e.size });
        let left = e.size;
        while (left > 0) {
          const piece = await reader.take(Math.min(left, 1 << 20));
          if (!piece.length) throw changed();
          left -= piece.length;
          yield piece;
        }
        if (e.size % TAR_BLOCK) yield Buffer.alloc(TAR_BLOCK - (e.size % TAR_BLOCK));
      }
      // Sockets, FIFOs and devices are not exported (as before).
    }
    if ((await reader.take(1)).length) throw changed();
    yield Buffer.alloc(2 * TAR_BLOCK);
  } finally {
    clearTimeout(timer);
    kill();
  }
}

/** Joins small pieces (headers, small files) into writes of about 1 MiB. */
async function* coalesce(pieces: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let held: Buffer[] = [];
  let size = 0;
  for await (const piece of pieces) {
    held.push(piece);
    size += piece.length;
    if (size >= 1 << 20) {
      yield Buffer.concat(held);
      held = [];
      size = 0;
    }
  }
  if (size) yield Buffer.concat(held);
}

/** Writes `guestPath` (a directory) of a disk-backed workspace to `scratchFile` as a tar; returns its size. */
export async function exportDirectoryFromDisk(
  ctx: WorkspaceContext,
  record: WorkspaceRecord,
  vm: RunningVm,
  guestPath: string,
  redactor: Redactor,
  scratchFile: string,
): Promise<number> {
  const prefix = guestPath === WORKSPACE_ROOT ? "" : guestPath.slice(WORKSPACE_ROOT.length + 1);
  const manifest = await guestManifest(vm.agent);
  const scratch = await makePrivateTempDir(ctx.store.dir(record.id), ".disk-");
  try {
    const { raw, bytes } = await pausedDiskCopy(ctx, record, vm, scratch);
    const out = join(scratch, "out");
    await replayJournal(out, bytes);
    if (!redactor.active) {
      // Streamed: nothing but the archive is written on the host.
      const below = manifest
        .filter((e) => !prefix || e.path.startsWith(`${prefix}/`))
        .map((e) => (prefix ? { ...e, path: e.path.slice(prefix.length + 1) } : e));
      await pipeline(coalesce(tarFromImage(out, below)), createWriteStream(scratchFile, { mode: 0o644, flags: "wx" }));
      return (await lstat(scratchFile)).size;
    }
    // Redaction can change a file's length, which a tar header must state first: dump, redact, pack.
    const entry = await new Ext4Image(raw).lookup(prefix ? `/${prefix}` : "/");
    const tree = await dumpDirectory(out, entry.inode, bytes);
    await rm(raw, { force: true });
    // Redaction replaces each file by a copy, so hardlinks are restored after it.
    await redactTree(tree, redactor);
    await restoreHardlinks(tree, manifest, prefix);
    // GNU tar on pyro's own dump (never following a link), written straight to the file: modes and
    // hardlinks exact, owners root as in the guest, host speed.
    await runHostCommand(
      requireExecutable("tar", "tar"),
      ["-c", "-f", scratchFile, "-C", tree, "--numeric-owner", "--owner=0", "--group=0", "--format=gnu", "."],
      { timeoutMs: 1_800_000 },
    );
    return (await lstat(scratchFile)).size;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
