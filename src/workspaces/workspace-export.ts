import { lstat, open, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { PyroError } from "../errors.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { type Ext4Inode, Ext4Reader, type Ext4WalkEntry } from "../storage/ext4-reader.js";
import { assertOutputFree, publishNewFile } from "../storage/new-host-file.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { openDisk } from "../storage/qcow2-reader.js";
import { ContentBudget, HeaderBudget } from "./export-bounds.js";
import { copyTopLayerAtOneMoment } from "./frozen-disk-view.js";
import { relativeToWorkspace, WORKSPACE_ROOT, workspacePath } from "./guest-paths.js";
import type { Redactor } from "./secret-redaction.js";
import type { ManifestEntry } from "./tree-manifest.js";
import { TAR_BLOCK, type TarFields, writeUstarHeader } from "./ustar-header.js";
import { withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { EXPORT_HEADER_BYTES } from "./workspace-limits.js";
import { workspaceDiskPath } from "./workspace-disk-files.js";
import type { WorkspaceRecord } from "./workspace-record.js";

/**
 * Copies a file or directory out of a workspace. A directory of a workspace whose /workspace is
 * its own disk is exported at host speed and with bounded memory from the disk itself: the guest's
 * /workspace is frozen (frozen-disk-view.ts) just long enough to copy the top qcow2 layer (the
 * layers below never change), and the tar is streamed from that copy and the layers below by
 * pyro's own readers (qcow2-reader, ext4-reader, which treat every byte as hostile): no guest
 * walk, no qemu-img, no debugfs. With secret redaction, workspace-export-redacted.ts dumps and
 * packs instead. What only other routes need is loaded when they are taken (a plain export loads
 * no sandbox or boot code), and what this one needs is loaded while the guest freezes.
 */

/** The top qcow2 layer of the guest's /workspace disk, copied at one moment (the layers below never change). */
async function topLayerCopy(ctx: WorkspaceContext, record: WorkspaceRecord, vm: RunningVm, scratch: string): Promise<string> {
  const top = join(scratch, "top.qcow2");
  await copyTopLayerAtOneMoment(vm, workspaceDiskPath(ctx, record.id), top);
  return top;
}

/**
 * The mode an exported entry gets: setuid and setgid dropped. A guest's root can make any file
 * setuid root; carried into the tar, extracting it as root on the host (`tar -xp`) would install a
 * setuid-root program the guest wrote. The sticky bit and permissions are kept.
 */
function exportedMode(mode: number): number {
  return mode & 0o1777;
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

/** The tar header fields of one walked entry (undefined for sockets, FIFOs and devices, which are not exported); `linkedTo` names a hardlink's first path. */
function entryFields(e: ManifestEntry, linkedTo: string | undefined): TarFields | undefined {
  const mtime = new Date(Number(e.mtimeNs / 1_000_000n));
  const path = e.type === "d" ? `./${e.path}/` : `./${e.path}`;
  const mode = exportedMode(e.mode);
  if (e.type === "d") return { path, mode, uid: 0, gid: 0, mtime, type: "Directory", size: 0 };
  if (e.type === "l") return { path, mode, uid: 0, gid: 0, mtime, type: "SymbolicLink", linkpath: e.target, size: 0 };
  if (e.type === "f" && linkedTo !== undefined) return { path, mode, uid: 0, gid: 0, mtime, type: "Link", linkpath: `./${linkedTo}`, size: 0 };
  if (e.type === "f") return { path, mode, uid: 0, gid: 0, mtime, type: "File", size: e.size };
  return undefined;
}

/** Zeros that pad file bodies to whole tar blocks, and end the archive. */
const TAR_ZEROS = Buffer.alloc(2 * TAR_BLOCK);

/**
 * The tar of one directory of the disk, read in-process from its filesystem: the walk gives names,
 * modes, times, link targets and hardlinks (the same records the guest's walk would), and each
 * file's bytes come straight from its blocks. No file is created on the host and no guest CPU is
 * used. The reader checks every byte the guest wrote; a damaged filesystem fails the export.
 *
 * The archive is produced into buffers the writer hands in (`fill`), each taken up where the last
 * one filled: file bytes are read straight into them, and no buffer is allocated per piece.
 */
class FilesystemTar {
  private readonly entries: Iterator<Ext4WalkEntry>;
  private readonly seen = new Map<number, string>();
  /** What is left to write before the next entry: a header, then a file's bytes, then padding. */
  private header: TarFields | undefined;
  /** The header's pax encoding, once ustar could not hold it (kept while the target has no room for it). */
  private pax: Buffer | undefined;
  private readFile: ((target: Buffer) => number) | undefined;
  private fileLeft = 0;
  private padding = 0;
  private ended = false;

  constructor(
    private readonly fs: Ext4Reader,
    root: Ext4Inode,
    guestPath: string,
    private readonly budget: ContentBudget,
    private readonly headers: HeaderBudget,
    /** The header of an entry that ustar cannot hold (a long name or link target). */
    private readonly paxHeader: (fields: TarFields) => Buffer,
  ) {
    // Each directory's subtree right after it: GNU tar then sets its time once nothing more goes in it.
    this.entries = utf8Names(fs.walk(root, { order: "subtree" }), guestPath);
  }

  /** Fills a prefix of `target` with the archive's next bytes; returns its length (0: the archive is complete). */
  fill(target: Buffer): number {
    let used = 0;
    for (;;) {
      if (this.header) {
        if (target.length - used < TAR_BLOCK) break;
        if (!this.pax && writeUstarHeader(target, used, this.header)) {
          this.headers.add(TAR_BLOCK, this.header.path);
          used += TAR_BLOCK;
        } else {
          this.pax ??= this.paxHeader(this.header);
          if (target.length - used < this.pax.length) break;
          this.headers.add(this.pax.length, this.header.path);
          used += this.pax.copy(target, used);
          this.pax = undefined;
        }
        this.header = undefined;
      }
      if (this.readFile) {
        const read = this.readFile(target.subarray(used));
        used += read;
        this.fileLeft -= read;
        if (this.fileLeft > 0) break; // target is full (to within a block)
        this.readFile = undefined;
      }
      if (this.padding) {
        if (target.length - used < this.padding) break;
        target.fill(0, used, used + this.padding);
        used += this.padding;
        this.padding = 0;
      }
      if (!this.next()) {
        if (!this.ended && target.length - used >= TAR_ZEROS.length) {
          used += TAR_ZEROS.copy(target, used);
          this.ended = true;
        }
        break;
      }
    }
    // Every piece fits an empty target (a header is at most a few blocks, a read at least one block).
    if (used === 0 && !this.ended) throw new Error(`a ${target.length}-byte buffer cannot hold the tar's next piece`);
    return used;
  }

  /** Takes the next exported entry as what is left to write; false at the walk's end. */
  private next(): boolean {
    for (;;) {
      const walked = this.entries.next();
      if (walked.done) return false;
      const e = walked.value;
      const first = e.type === "f" && e.nlink > 1 ? this.seen.get(e.ino) : undefined;
      const header = entryFields(e, first);
      if (!header) continue;
      this.budget.add(e);
      this.header = header;
      if (e.type !== "f" || first !== undefined) return true;
      if (e.nlink > 1) this.seen.set(e.ino, e.path);
      if (e.size > 0) {
        this.readFile = this.fs.contentReader(e.inode);
        this.fileLeft = e.size;
      }
      this.padding = (TAR_BLOCK - (e.size % TAR_BLOCK)) % TAR_BLOCK;
      return true;
    }
  }
}

/** Bytes handed to each write: large writes, few system calls. */
const WRITE_BYTES = 1 << 20;

/**
 * Writes the tar to a new file through two reused buffers: one is filled while the other is being
 * written, so reading the disk and writing the archive overlap; the tar's pieces never cost a
 * promise turn each (the source is synchronous) and gigabytes allocate no buffer per write.
 */
async function writeTar(tar: FilesystemTar, file: string): Promise<void> {
  const handle = await open(file, "wx", 0o644);
  let writing: Promise<void> = Promise.resolve();
  try {
    const buffers = [Buffer.allocUnsafe(WRITE_BYTES), Buffer.allocUnsafe(WRITE_BYTES)];
    for (let i = 0; ; i ^= 1) {
      const buffer = buffers[i]!;
      const used = tar.fill(buffer);
      await writing;
      if (used === 0) break;
      writing = (async () => {
        for (let done = 0; done < used; ) done += (await handle.write(buffer, done, used - done)).bytesWritten;
      })();
    }
  } finally {
    // A write still in flight finishes before the file closes; where filling threw, that error is the one reported.
    await writing.catch(() => undefined);
    await handle.close();
  }
}

/** The tar library's header encoder, for the entries ustar cannot hold: loaded on first use (it is large). */
const paxHeaders = () => import("./tar-header.js").then((m) => m.tarHeader);

/**
 * Writes the tar of directory `root` of `fs` (the guest's `guestPath`, on a disk of `diskBytes`) to
 * the new file `file`, its headers bounded by `headerBytes`.
 */
export async function writeFilesystemTar(
  fs: Ext4Reader,
  root: Ext4Inode,
  guestPath: string,
  diskBytes: number,
  file: string,
  headerBytes = EXPORT_HEADER_BYTES,
): Promise<void> {
  const bounds = [new ContentBudget(diskBytes, guestPath), new HeaderBudget(guestPath, headerBytes)] as const;
  await writeTar(new FilesystemTar(fs, root, guestPath, ...bounds, await paxHeaders()), file);
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
  // Prefetched: the header encoder loads while the guest freezes and the host copies (this process only waits then).
  void paxHeaders().catch(() => undefined);
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
        await writeFilesystemTar(fs, root, guestPath, disk.size, scratchFile);
      } finally {
        disk.close();
      }
      return (await lstat(scratchFile)).size;
    }
    const { exportRedactedDirectory } = await import("./workspace-export-redacted.js");
    return await exportRedactedDirectory(vm.agent, guestPath, prefix, redactor, top, scratch, scratchFile);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Copies a file or directory out of the workspace to the host. A file arrives as itself, a
 * directory as a .tar archive. Never overwrites an existing host file.
 */
export async function exportFromWorkspace(ctx: WorkspaceContext, ref: string, path: string, outputPath: string) {
  const guestPath = workspacePath(path);
  const output = resolve(outputPath);
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    await assertOutputFree(output);
    const st = await vm.agent.stat(guestPath);
    let written = 0;
    let kind: "file" | "archive";
    if (st.type === "file") {
      // Streamed to disk piece by piece: a file of any size costs the host one piece of memory.
      kind = "file";
      const { readFileChunks } = await import("./guest-transfer.js");
      await publishNewFile(output, async (scratchFile) => {
        const out = await open(scratchFile, "wx", st.mode & 0o777);
        try {
          const redact = session.redactor.stream();
          const write = async (bytes: Buffer) => {
            if (bytes.length) await out.writeFile(bytes);
            written += bytes.length;
          };
          for await (const piece of readFileChunks(vm.agent, guestPath, st.size)) await write(redact.push(piece));
          await write(redact.end());
        } finally {
          await out.close();
        }
      });
    } else if (st.type === "directory" && record.disk_gib !== null) {
      kind = "archive";
      await publishNewFile(output, async (scratchFile) => {
        written = await exportDirectoryFromDisk(ctx, record, vm, guestPath, session.redactor, scratchFile);
      });
    } else if (st.type === "directory") {
      // A workspace without its own disk (made before disks): the guest packs, pyro redacts.
      const [{ packInGuest }, { redactTar }] = await Promise.all([import("./guest-transfer.js"), import("./workspace-tree.js")]);
      const bytes = await redactTar(await packInGuest(vm.agent, guestPath), session.redactor);
      kind = "archive";
      written = bytes.length;
      await publishNewFile(output, (scratchFile) => writeFile(scratchFile, bytes, { mode: 0o644, flag: "wx" }));
    } else {
      throw new PyroError("INVALID_ARGUMENT", `${relativeToWorkspace(guestPath)} is a ${st.type}; export files or directories`);
    }
    return { workspace_id: record.id, path: relativeToWorkspace(guestPath) || ".", output, kind, bytes: written };
  });
}
