import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, open, rename, rm, symlink, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { isPyroError, PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { diskChain } from "../storage/qcow2-backing-chain.js";
import { type Ext4Inode, Ext4Reader, type Ext4WalkEntry } from "../storage/ext4-reader.js";
import { openDisk } from "../storage/qcow2-reader.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { RootedTree } from "../storage/rooted-path.js";
import { Ext4Image } from "./disk-image.js";
import { copyTopLayerAtOneMoment } from "./frozen-disk-view.js";
import { TAR_BLOCK, type TarFields, tarHeader } from "./tar-header.js";
import { ustarHeader } from "./ustar-header.js";
import { WORKSPACE_ROOT } from "./guest-paths.js";
import type { Redactor } from "./secret-redaction.js";
import { manifestEntries, type ManifestEntry } from "./tree-manifest.js";
import { TREE_MANIFEST_LIMITS } from "./workspace-limits.js";
import { workspaceDiskPath } from "./workspace-boot.js";
import type { WorkspaceContext } from "./workspace-context.js";
import type { WorkspaceRecord } from "./workspace-record.js";

/**
 * Exports a directory of a workspace whose /workspace is its own disk, at host speed and with
 * bounded memory, from the disk itself: the guest's /workspace is frozen (frozen-disk-view.ts) just
 * long enough to copy the top qcow2 layer (the layers below never change). Without redaction, the tar is streamed from
 * that copy and the layers below by pyro's own readers (qcow2-reader, ext4-reader, which treat
 * every byte as hostile): no guest walk, no qemu-img, no debugfs. With redaction (file lengths
 * change, so files must exist before their headers), the copy is converted to raw, its journal
 * replayed and the directory dumped with debugfs inside host-sandbox, redacted, and packed by tar;
 * hardlinks are restored from the guest's manifest and directory times are not kept.
 */

const TOOL_LIMITS = { cpuSeconds: 1800, addressSpaceBytes: 4 * 2 ** 30 };
const TOOL_TIMEOUT_MS = 1_800_000;

/** The top qcow2 layer of the guest's /workspace disk, copied at one moment (the layers below never change). */
async function topLayerCopy(ctx: WorkspaceContext, record: WorkspaceRecord, vm: RunningVm, scratch: string): Promise<string> {
  const top = join(scratch, "top.qcow2");
  await copyTopLayerAtOneMoment(vm, workspaceDiskPath(ctx, record.id), top);
  return top;
}

/** The copied disk as a raw image in `scratch`/out (qemu-img in the sandbox: the guest wrote every block), its journal replayed. */
async function rawDiskCopy(top: string, scratch: string): Promise<{ raw: string; out: string; bytes: number }> {
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
  await replayJournal(out, chain.virtualSize);
  return { raw, out, bytes: chain.virtualSize };
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
export async function restoreHardlinks(tree: string, entries: Iterable<ManifestEntry>, prefix: string): Promise<void> {
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

/** The guest's manifests come in the agent's walk order, which lets the parse keep only the directories not yet walked. */
const WALK = { order: "walk" } as const;

/**
 * The mode an exported entry gets: setuid and setgid dropped. A guest's root can make any file
 * setuid root; carried into the tar, extracting it as root on the host (`tar -xp`) would install a
 * setuid-root program the guest wrote. The sticky bit and permissions are kept.
 */
export function exportedMode(mode: number): number {
  return mode & 0o1777;
}

/**
 * What an export may write of file contents: no more than the disk holds. A guest can make a file
 * of any apparent size with no blocks behind it (`truncate -s 1T`): its tar would hold all of it.
 * A tree's contents (hardlinks counted once) cannot exceed its disk unless files are sparse, so the
 * export is refused at the file that takes it past the disk, before that file's bytes are written:
 * an export never writes more than its disk's size, and a refused one leaves no output.
 */
class ContentBudget {
  private bytes = 0;
  private readonly linked = new Set<number>();

  constructor(
    private readonly maxBytes: number,
    private readonly label: string,
  ) {}

  /** Counts a walked entry's contents (files only; a hardlink's inode once); throws past the disk. */
  add(e: ManifestEntry): void {
    if (e.type !== "f" || (e.nlink > 1 && this.linked.has(e.ino))) return;
    if (e.nlink > 1) this.linked.add(e.ino);
    this.bytes += e.size;
    if (this.bytes > this.maxBytes)
      throw new PyroError(
        "GUEST_OPERATION_FAILED",
        `${this.label} holds more than its ${this.maxBytes}-byte disk can store in file contents, so some files are sparse ('${e.path}', ${e.size} bytes, takes it past); export a directory without them, or remove them`,
        { disk_bytes: this.maxBytes, path: e.path, size: e.size },
      );
  }
}

/**
 * The disk's walk, refusing a name that is not UTF-8: a tar's names are UTF-8 text, so such a name
 * would reach the host renamed (its bytes spelled `\xNN`) without a word.
 */
function* utf8Names(entries: Iterable<Ext4WalkEntry>, guestPath: string): Generator<Ext4WalkEntry> {
  for (const e of entries) {
    if (!e.utf8Name)
      throw new PyroError(
        "GUEST_OPERATION_FAILED",
        `${guestPath}/${e.path} has a name that is not UTF-8, which the exported tar cannot carry as it is; rename it in the workspace, or export a directory without it`,
        { path: e.path },
      );
    yield e;
  }
}

/** The tar header of one walked entry (undefined for sockets, FIFOs and devices, which are not exported); `linkedTo` names a hardlink's first path. */
function entryHeader(e: ManifestEntry, linkedTo: string | undefined): Buffer | undefined {
  const mtime = new Date(Number(e.mtimeNs / 1_000_000n));
  const common = { path: e.type === "d" ? `./${e.path}/` : `./${e.path}`, mode: exportedMode(e.mode), uid: 0, gid: 0, mtime };
  let fields: TarFields;
  if (e.type === "d") fields = { ...common, type: "Directory", size: 0 };
  else if (e.type === "l") fields = { ...common, type: "SymbolicLink", linkpath: e.target, size: 0 };
  else if (e.type === "f" && linkedTo !== undefined) fields = { ...common, type: "Link", linkpath: `./${linkedTo}`, size: 0 };
  else if (e.type === "f") fields = { ...common, type: "File", size: e.size };
  else return undefined;
  return ustarHeader(fields) ?? tarHeader(fields);
}

/** Zeros that pad file bodies to whole tar blocks, and end the archive. */
const TAR_ZEROS = Buffer.alloc(2 * TAR_BLOCK);

/**
 * The tar of one directory of the disk, read in-process from its filesystem: the walk gives names,
 * modes, times, link targets and hardlinks (the same records the guest's walk would), and each
 * file's bytes come straight from its blocks. No file is created on the host and no guest CPU is
 * used. The reader checks every byte the guest wrote; a damaged filesystem fails the export.
 */
function* tarFromFilesystem(fs: Ext4Reader, root: Ext4Inode, guestPath: string, budget: ContentBudget): Generator<Buffer> {
  const seen = new Map<number, string>();
  // Each directory's subtree right after it: GNU tar then sets its time once nothing more goes in it.
  for (const e of utf8Names(fs.walk(root, { order: "subtree" }), guestPath)) {
    const first = e.type === "f" && e.nlink > 1 ? seen.get(e.ino) : undefined;
    const header = entryHeader(e, first);
    if (!header) continue;
    budget.add(e);
    yield header;
    if (e.type !== "f" || first !== undefined) continue;
    if (e.nlink > 1) seen.set(e.ino, e.path);
    for (const piece of fs.contents(e.inode)) yield piece;
    if (e.size % TAR_BLOCK) yield TAR_ZEROS.subarray(0, TAR_BLOCK - (e.size % TAR_BLOCK));
  }
  yield TAR_ZEROS;
}

/**
 * Writes the pieces to a new file through one reused 1 MiB buffer: small pieces (headers, small
 * files) become large writes, and streaming gigabytes allocates no buffer per write (freshly
 * allocated ones pile up until the garbage collector gets to them: ~20 MB more peak RSS on 2 GB).
 */
async function writePieces(pieces: Iterable<Buffer>, file: string): Promise<void> {
  const handle = await open(file, "wx", 0o644);
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    let used = 0;
    const flush = async () => {
      for (let done = 0; done < used; ) done += (await handle.write(buffer, done, used - done)).bytesWritten;
      used = 0;
    };
    // A synchronous source: awaiting each of a 10k-file tree's ~30k pieces cost ~0.3 s of promise turns; only the writes wait.
    for (const piece of pieces) {
      for (let at = 0; at < piece.length; ) {
        const copied = piece.copy(buffer, used, at);
        used += copied;
        at += copied;
        if (used === buffer.length) await flush();
      }
    }
    await flush();
  } finally {
    await handle.close();
  }
}

/** The guest's walk of `guestPath` (a directory), as bytes: parsed record by record where it is used (in the agent's order). */
async function guestTreeManifest(agent: AgentClient, guestPath: string): Promise<Buffer> {
  const { header, payload } = await agent.treeManifest(guestPath, TREE_MANIFEST_LIMITS.bytes, TOOL_TIMEOUT_MS);
  if (header.truncated === true)
    throw new PyroError(
      "GUEST_OPERATION_FAILED",
      `${guestPath} has too many entries to export at once (its listing is over ${TREE_MANIFEST_LIMITS.bytes >> 20} MiB); export a subdirectory`,
    );
  return payload;
}

/** Runs `use` over the guest's manifest, turning a malformed record into the connection's protocol violation. */
async function withGuestManifest<T>(agent: AgentClient, use: () => Promise<T>): Promise<T> {
  try {
    return await use();
  } catch (error) {
    if (isPyroError(error, "GUEST_PROTOCOL_ERROR")) throw agent.rejectGuestData(error.message);
    throw error;
  }
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
  const scratch = await makePrivateTempDir(ctx.store.dir(record.id), ".disk-");
  try {
    const top = await topLayerCopy(ctx, record, vm, scratch);
    if (!redactor.active) {
      // Streamed from the disk copy in-process: nothing but the archive is written on the host.
      const disk = openDisk(top, { topDirectory: dirname(workspaceDiskPath(ctx, record.id)) });
      try {
        const fs = Ext4Reader.open(disk);
        const root = fs.lookup(prefix);
        if (root?.type !== "d")
          throw new PyroError(
            "GUEST_OPERATION_FAILED",
            `${guestPath} is no longer a directory on the workspace disk; export again (or stop the processes changing it)`,
          );
        await writePieces(tarFromFilesystem(fs, root, guestPath, new ContentBudget(disk.size, guestPath)), scratchFile);
      } finally {
        disk.close();
      }
      return (await lstat(scratchFile)).size;
    }
    // Redaction can change a file's length, which a tar header must state first: dump, redact, pack.
    // The guest walks the directory while the host converts the disk copy: the two take about as
    // long, and neither needs the other.
    // Both settle before anything is removed: a tool still writing into the scratch dir is never raced.
    const [walked, copied] = await Promise.allSettled([guestTreeManifest(vm.agent, guestPath), rawDiskCopy(top, scratch)]);
    if (walked.status === "rejected") throw walked.reason;
    if (copied.status === "rejected") throw copied.reason;
    const manifest = walked.value;
    const { raw, out, bytes } = copied.value;
    return await withGuestManifest(vm.agent, async () => {
      // The dump is bounded like the stream (no sparse file expands on the host), checked before it is made.
      const budget = new ContentBudget(bytes, guestPath);
      for (const e of manifestEntries(manifest, WALK)) budget.add(e);
      const entry = await new Ext4Image(raw).lookup(prefix ? `/${prefix}` : "/");
      const tree = await dumpDirectory(out, entry.inode, bytes);
      await rm(raw, { force: true });
      // Redaction replaces each file by a copy, so hardlinks are restored after it.
      await redactTree(tree, redactor);
      await restoreHardlinks(tree, manifestEntries(manifest, WALK), "");
      // GNU tar on pyro's own dump (never following a link), written straight to the file: modes and
      // hardlinks exact (setuid/setgid dropped, as in the stream), owners root as in the guest, host speed.
      await runHostCommand(
        requireExecutable("tar", "tar"),
        ["-c", "-f", scratchFile, "-C", tree, "--numeric-owner", "--owner=0", "--group=0", "--mode=ug-s", "--format=gnu", "."],
        { timeoutMs: 1_800_000 },
      );
      return (await lstat(scratchFile)).size;
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
