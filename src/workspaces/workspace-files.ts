import { applyPatch, parsePatch, type StructuredPatch } from "diff";
import { PyroError } from "../errors.js";
import { isPyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import { relativeToWorkspace, workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { readWholeFile } from "./guest-transfer.js";
import { FILE_READ_DEFAULT_MAX_BYTES, fileReadView } from "./file-read-view.js";
import { nowIso, withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";

export { FILE_READ_DEFAULT_MAX_BYTES };
/** Text written through file write / patch apply; bigger content belongs in sync push. */
const MAX_TEXT_BYTES = 16 * 1024 * 1024;

export interface FileEntryView {
  path: string;
  type: string;
  size: number;
  mode: string;
  modified_at: string;
  target?: string;
}

export async function listWorkspaceFiles(ctx: WorkspaceContext, ref: string, path = WORKSPACE_ROOT, recursive = false) {
  const guestPath = workspacePath(path);
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const { entries, truncated } = await vm.agent.list(guestPath, { recursive });
    const view: FileEntryView[] = entries.map((e) => ({
      path: relativeToWorkspace(e.path),
      type: e.type,
      size: e.size,
      mode: e.mode.toString(8).padStart(4, "0"),
      modified_at: new Date(e.mtimeMs).toISOString(),
      ...(e.target !== undefined ? { target: e.target } : {}),
    }));
    return { workspace_id: record.id, path: relativeToWorkspace(guestPath) || ".", count: view.length, truncated, entries: view };
  });
}

/** Reads a file; text comes back as UTF-8, anything else as base64 (and says so). Reads are not activity. */
export async function readWorkspaceFile(ctx: WorkspaceContext, ref: string, path: string, maxBytes = FILE_READ_DEFAULT_MAX_BYTES) {
  const guestPath = workspacePath(path);
  if (!(maxBytes > 0)) throw new PyroError("INVALID_ARGUMENT", "max bytes must be positive");
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    // Read past the cut so a secret crossing it is redacted whole, not left as a prefix.
    const { data, size } = await vm.agent.readFile(guestPath, { maxBytes: maxBytes + session.redactor.contextBytes });
    return { workspace_id: record.id, path: relativeToWorkspace(guestPath), ...fileReadView(data, size, maxBytes, session.redactor) };
  });
}

export async function writeWorkspaceFile(ctx: WorkspaceContext, ref: string, path: string, text: string) {
  const guestPath = workspacePath(path);
  if (guestPath === WORKSPACE_ROOT) throw new PyroError("INVALID_ARGUMENT", "cannot write to /workspace itself; name a file");
  const data = Buffer.from(text, "utf8");
  if (data.length > MAX_TEXT_BYTES) throw new PyroError("INVALID_ARGUMENT", `text is larger than ${MAX_TEXT_BYTES} bytes; use 'workspace sync push'`);
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    await vm.agent.writeFile(guestPath, data, { mode: await existingMode(vm.agent, guestPath) });
    await vm.agent.sync();
    record.last_activity_at = record.updated_at = nowIso();
    await ctx.store.write(record);
    return { workspace_id: record.id, path: relativeToWorkspace(guestPath), bytes: data.length };
  });
}

/** Keeps an existing file's permissions (an executable script stays executable); 0644 for new files. */
async function existingMode(agent: AgentClient, guestPath: string): Promise<number> {
  try {
    const st = await agent.stat(guestPath);
    return st.type === "file" ? st.mode : 0o644;
  } catch {
    return 0o644;
  }
}

/** git-style names: "a/src/x.c" → "src/x.c"; /dev/null → undefined. */
function patchTarget(name: string | undefined): string | undefined {
  if (!name || name === "/dev/null") return undefined;
  const clean = name.split("\t")[0]!.trim();
  return /^[ab]\//.test(clean) ? clean.slice(2) : clean;
}

async function readBytesOrUndefined(agent: AgentClient, path: string): Promise<Buffer | undefined> {
  try {
    return await readWholeFile(agent, path, MAX_TEXT_BYTES);
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/** Finds the first hunk that does not apply, by applying growing prefixes of the hunk list. */
function failingHunk(source: string, patch: StructuredPatch): number {
  for (let i = 1; i <= patch.hunks.length; i++) {
    if (applyPatch(source, { ...patch, hunks: patch.hunks.slice(0, i) }) === false) return i;
  }
  return patch.hunks.length;
}

export interface PatchResult {
  workspace_id: string;
  files: { path: string; status: "modified" | "added" | "deleted" }[];
}

function isNotFound(error: unknown): boolean {
  return isPyroError(error, "GUEST_OPERATION_FAILED") && error.details.guestCode === "not_found";
}

async function removeIfPresent(agent: AgentClient, path: string): Promise<void> {
  await agent.remove(path).catch((error: unknown) => {
    if (!isNotFound(error)) throw error;
  });
}

interface PlannedChange {
  guestPath: string;
  display: string;
  status: PatchResult["files"][number]["status"];
  content: string;
  mode: number;
  /** The target's bytes before the patch; undefined when it did not exist. */
  previous: Buffer | undefined;
}

/**
 * Writes every planned change, or none: when a write fails midway (disk full, an immutable file),
 * the files already written get their previous content (or absence) back. The write that failed
 * changed nothing: the agent writes through a temp file and a rename.
 */
async function writePlanned(agent: AgentClient, planned: PlannedChange[]): Promise<void> {
  const touched: PlannedChange[] = [];
  let failed = "";
  try {
    for (const change of planned) {
      failed = change.display;
      if (change.status === "deleted") await agent.remove(change.guestPath);
      else await agent.writeFile(change.guestPath, change.content, { mode: change.mode });
      touched.push(change);
    }
  } catch (error) {
    const unrestored: string[] = [];
    for (const change of touched.reverse()) {
      try {
        if (change.previous !== undefined) await agent.writeFile(change.guestPath, change.previous, { mode: change.mode });
        else await removeIfPresent(agent, change.guestPath);
      } catch {
        unrestored.push(change.display);
      }
    }
    await agent.sync().catch(() => undefined);
    const why = error instanceof Error ? error.message : String(error);
    throw new PyroError(
      "PATCH_FAILED",
      unrestored.length
        ? `writing ${failed} failed (${why}) and ${unrestored.join(", ")} could not be restored: the patch is partly applied; check with workspace diff`
        : `writing ${failed} failed (${why}); the files already written were restored, so nothing was changed`,
      { file: failed, ...(unrestored.length ? { unrestored } : {}) },
      { cause: error },
    );
  }
}

/**
 * Applies a unified diff (one or many files, creations and deletions). Every file is patched in
 * memory first; if any hunk fails, nothing is written and the error names the file and hunk. If a
 * write fails midway, what was written is rolled back.
 */
export async function applyWorkspacePatch(ctx: WorkspaceContext, ref: string, patchText: string): Promise<PatchResult> {
  let patches: StructuredPatch[];
  try {
    patches = parsePatch(patchText).filter((p) => p.hunks.length > 0 || p.oldFileName || p.newFileName);
  } catch (error) {
    throw new PyroError("PATCH_FAILED", `not a valid unified diff: ${(error as Error).message}`);
  }
  if (patches.length === 0) throw new PyroError("PATCH_FAILED", "the patch contains no file changes");
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const planned: PlannedChange[] = [];
    for (const patch of patches) {
      const oldName = patchTarget(patch.oldFileName);
      const newName = patchTarget(patch.newFileName);
      const display = newName ?? oldName ?? "?";
      const guestPath = workspacePath(display);
      const status = oldName === undefined ? "added" : newName === undefined ? "deleted" : "modified";
      // What the target holds now, byte for byte: what a rollback puts back.
      const previous = await readBytesOrUndefined(vm.agent, guestPath);
      const source =
        status === "added" ? Buffer.alloc(0) : workspacePath(oldName!) === guestPath ? previous : await readBytesOrUndefined(vm.agent, workspacePath(oldName!));
      if (source === undefined) throw new PyroError("PATCH_FAILED", `patch for ${display} does not apply: the file does not exist; nothing was changed`);
      if (status === "added" && previous !== undefined) {
        throw new PyroError("PATCH_FAILED", `patch creates ${display}, which already exists; nothing was changed`);
      }
      const current = source.toString("utf8");
      const result = applyPatch(current, patch);
      if (result === false) {
        const hunk = failingHunk(current, patch);
        const header = patch.hunks[hunk - 1];
        throw new PyroError(
          "PATCH_FAILED",
          `hunk ${hunk} of ${patch.hunks.length} for ${display}${header ? ` (@@ -${header.oldStart},${header.oldLines} +${header.newStart},${header.newLines} @@)` : ""} does not apply; nothing was changed`,
          { file: display, hunk },
        );
      }
      planned.push({ guestPath, display, status, content: result, mode: await existingMode(vm.agent, guestPath), previous });
    }
    await writePlanned(vm.agent, planned);
    await vm.agent.sync();
    record.last_activity_at = record.updated_at = nowIso();
    await ctx.store.write(record);
    return { workspace_id: record.id, files: planned.map(({ display, status }) => ({ path: display, status })) };
  });
}
