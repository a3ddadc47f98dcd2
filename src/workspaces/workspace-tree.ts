import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Header, Pack, Parser, ReadEntry } from "tar";
import { PyroError } from "../errors.js";
import { prepareTree } from "./archive-safety.js";
import { workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { extractTarInGuest, packInGuest, pushDirectoryInBatches } from "./guest-transfer.js";
import { formatFileDiff, type TreeEntry } from "./file-diff.js";
import { diffWorkspaceDisk, type DiffOptions, type DiskDiffPage } from "./workspace-diff.js";
import { nowIso, withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import type { Redactor } from "./secret-redaction.js";

/**
 * Copies a host directory or archive into the workspace (default: /workspace itself). A directory
 * streams in batches the agent unpacks from each request; an archive (and a directory holding a
 * file too big for one request, or a guest whose agent predates batches) goes as one validated
 * tar staged on the guest's disk.
 */
export async function syncPush(ctx: WorkspaceContext, ref: string, source: string, dest = WORKSPACE_ROOT) {
  const guestDest = workspacePath(dest);
  const isDirectory = (await stat(source).catch(() => undefined))?.isDirectory() === true;
  // An archive is validated before the workspace is touched.
  const archive = isDirectory ? undefined : await prepareTree(source);
  return withRunningWorkspace(
    ctx,
    ref,
    async (record, vm) => {
      let tree = archive;
      const streamed = isDirectory ? await pushDirectoryInBatches(vm.agent, source, guestDest) : undefined;
      if (!streamed) {
        tree ??= await prepareTree(source);
        await extractTarInGuest(vm.agent, tree.tar, guestDest);
      }
      record.last_activity_at = record.updated_at = nowIso();
      // Only the filesystem written to is flushed; pyro's record is written meanwhile.
      await Promise.all([vm.agent.sync(guestDest), ctx.store.write(record)]);
      const summary = streamed ?? tree!.summary;
      return { workspace_id: record.id, source, destination: guestDest, mode: isDirectory ? ("directory" as const) : tree!.mode, ...summary };
    },
    "sync push",
  );
}

async function readTree(tarBytes: Buffer): Promise<Map<string, TreeEntry>> {
  const entries = new Map<string, TreeEntry>();
  await new Promise<void>((resolvePromise, reject) => {
    const parser = new Parser();
    parser.on("entry", (entry: ReadEntry) => {
      const path = entry.path.replace(/^\.\//, "").replace(/\/$/, "");
      const chunks: Buffer[] = [];
      entry.on("data", (c: Buffer) => chunks.push(c));
      entry.on("end", () => {
        if (!path || path === ".") return;
        const item: TreeEntry = { type: entry.type, mode: (entry.mode ?? 0) & 0o7777 };
        if (entry.type === "File" || entry.type === "OldFile") item.data = Buffer.concat(chunks);
        if (entry.linkpath) item.linkpath = entry.linkpath;
        entries.set(path, item);
      });
    });
    parser.on("error", reject);
    parser.on("end", () => resolvePromise());
    parser.end(tarBytes);
  });
  return entries;
}

export interface DiffResult {
  workspace_id: string;
  changed: boolean;
  /** binary: null in summary mode (no contents are read). */
  summary: { added: number; modified: number; deleted: number; binary: number | null };
  files: { path: string; status: "added" | "modified" | "deleted"; binary: boolean | null }[];
  patch: string;
}

/**
 * Compares two trees (tar archives). Secrets are redacted from contents, names and link targets
 * before the patch is formatted: its "+"/"-" line prefixes would otherwise split a multi-line
 * secret into pieces that no longer match it.
 */
export async function diffTrees(baselineTar: Buffer, currentTar: Buffer, redactor: Redactor): Promise<Omit<DiffResult, "workspace_id">> {
  const [before, after] = await Promise.all([readTree(baselineTar), readTree(currentTar)]);
  const paths = [...new Set([...before.keys(), ...after.keys()])].sort();
  const result: Omit<DiffResult, "workspace_id"> = { changed: false, summary: { added: 0, modified: 0, deleted: 0, binary: 0 }, files: [], patch: "" };
  const parts: string[] = [];
  for (const originalPath of paths) {
    const a = before.get(originalPath);
    const b = after.get(originalPath);
    if (a?.type === "Directory" && b?.type === "Directory") continue;
    if (a && b && a.type === b.type && a.linkpath === b.linkpath && a.mode === b.mode && (a.data === b.data || (a.data && b.data && a.data.equals(b.data))))
      continue;
    if ((a?.type === "Directory" && !b) || (b?.type === "Directory" && !a)) continue; // their files tell the story
    const file = formatFileDiff(originalPath, a, b, redactor);
    result.summary[file.status]++;
    if (file.binary) result.summary.binary = (result.summary.binary ?? 0) + 1;
    result.files.push({ path: file.path, status: file.status, binary: file.binary });
    parts.push(file.patch);
  }
  result.patch = parts.join("");
  result.changed = result.files.length > 0;
  return result;
}

/**
 * Unified diff of /workspace against the baseline captured at create (added, deleted, binary files
 * too), a page at a time (DIFF_PAGE_LIMITS); `summary` lists changed paths and counts without contents.
 */
export async function diffWorkspace(ctx: WorkspaceContext, ref: string, options: DiffOptions = {}): Promise<DiffResult & Partial<DiskDiffPage>> {
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    if (record.disk_gib !== null) return { workspace_id: record.id, ...(await diffWorkspaceDisk(ctx, record, vm, session.redactor, options)) };
    // Created before /workspace had its own disk: the baseline is a tar captured at create.
    const baselineBytes = await readFile(join(ctx.store.dir(record.id), "baseline.tar")).catch(() => {
      throw new PyroError("GUEST_OPERATION_FAILED", `workspace ${record.id} has no baseline to diff against`);
    });
    return { workspace_id: record.id, ...(await diffTrees(baselineBytes, await packInGuest(vm.agent, WORKSPACE_ROOT), session.redactor)) };
  });
}

/**
 * Re-packs an archive with secret values redacted from file contents (text or binary), entry names
 * and link targets (a no-op without secrets). Files whose names redaction makes equal get a numbered
 * suffix rather than overwriting each other.
 */
export async function redactTar(tarBytes: Buffer, redactor: Redactor): Promise<Buffer> {
  if (!redactor.active) return tarBytes;
  const tree = await readTree(tarBytes);
  const pack = new Pack({ portable: true });
  const chunks: Buffer[] = [];
  pack.on("data", (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    pack.on("end", () => resolve());
    pack.on("error", reject);
  });
  const taken = new Set<string>();
  for (const [originalPath, entry] of tree) {
    const type = entry.type === "OldFile" ? "File" : entry.type;
    let path = redactor.text(originalPath);
    // Directories that redact to one name merge; anything else keeps its own entry.
    if (path !== originalPath && type !== "Directory") for (let n = 2; taken.has(path) || tree.has(path); n++) path = `${redactor.text(originalPath)}.${n}`;
    taken.add(path);
    const body = entry.data ? redactor.bytes(entry.data) : undefined;
    const linkpath = entry.linkpath ? redactor.text(entry.linkpath) : undefined;
    const header = new Header({
      path: type === "Directory" ? `${path}/` : path,
      type: type as Header["type"],
      mode: entry.mode,
      size: body?.length ?? 0,
      ...(linkpath ? { linkpath } : {}),
      mtime: new Date(),
    });
    const read = new ReadEntry(header);
    pack.add(read);
    if (body) read.write(body);
    read.end();
  }
  pack.end();
  await done;
  return Buffer.concat(chunks);
}
