import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, rename, rm, symlink, unlink } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { isPyroError, PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { runSandboxed, sandboxFailure, SANDBOX_OUTPUT_DIR } from "../process/host-sandbox.js";
import { diskChain } from "../storage/qcow2-backing-chain.js";
import { RootedTree } from "../storage/rooted-path.js";
import { Ext4Image } from "./disk-image.js";
import { ContentBudget, HeaderBudget } from "./export-bounds.js";
import type { Redactor } from "./secret-redaction.js";
import { manifestEntries, type ManifestEntry } from "./tree-manifest.js";
import { TAR_BLOCK } from "./ustar-header.js";
import { EXPORT_HEADER_BYTES, TREE_MANIFEST_LIMITS } from "./workspace-limits.js";

/**
 * The export of a directory with secret redaction (workspace-export.ts streams every other one):
 * redaction can change a file's length, which a tar header must state first, so the disk copy is
 * converted to raw, its journal replayed and the directory dumped with debugfs inside host-sandbox,
 * redacted, and packed by tar; hardlinks are restored from the guest's manifest and directory
 * times are not kept. Loaded only when a workspace has secrets.
 */

const TOOL_LIMITS = { cpuSeconds: 1800, addressSpaceBytes: 4 * 2 ** 30 };
const TOOL_TIMEOUT_MS = 1_800_000;

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
    // Appended in place: the guest's agent says which names share an inode, and copying the list
    // for each of 500k names claiming one inode would be quadratic.
    const names = byInode.get(e.ino);
    if (names) names.push(rel);
    else byInode.set(e.ino, [rel]);
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

/**
 * About what GNU tar (--format=gnu) writes for an entry before its bytes: its header, and a
 * long-name record for a name or link target past 100 bytes. A hardlink's target is another of
 * its names, taken to be about as long as this one.
 */
export function gnuHeaderBytes(e: ManifestEntry): number {
  const longName = (text: string) => {
    const bytes = Buffer.byteLength(text) + 1;
    return bytes > 100 ? TAR_BLOCK + Math.ceil(bytes / TAR_BLOCK) * TAR_BLOCK : 0;
  };
  const name = e.type === "d" ? `./${e.path}/` : `./${e.path}`;
  const target = e.type === "l" ? e.target : e.type === "f" && e.nlink > 1 ? name : "";
  return TAR_BLOCK + longName(name) + longName(target);
}

/**
 * Writes `guestPath` (a directory; `prefix` below /workspace) to `scratchFile` as a redacted tar,
 * from `top`, the copied top layer of its disk in the private directory `scratch`; returns its size.
 */
export async function exportRedactedDirectory(
  agent: AgentClient,
  guestPath: string,
  prefix: string,
  redactor: Redactor,
  top: string,
  scratch: string,
  scratchFile: string,
): Promise<number> {
  // Redaction can change a file's length, which a tar header must state first: dump, redact, pack.
  // The guest walks the directory while the host converts the disk copy: the two take about as
  // long, and neither needs the other.
  // Both settle before anything is removed: a tool still writing into the scratch dir is never raced.
  const [walked, copied] = await Promise.allSettled([guestTreeManifest(agent, guestPath), rawDiskCopy(top, scratch)]);
  if (walked.status === "rejected") throw walked.reason;
  if (copied.status === "rejected") throw copied.reason;
  const manifest = walked.value;
  const { raw, out, bytes } = copied.value;
  return await withGuestManifest(agent, async () => {
    // The dump is bounded like the stream (no sparse file expands on the host), checked before it is made.
    // So are its headers, as GNU tar will write them (estimated from the guest's names before redaction).
    const budget = new ContentBudget(bytes, guestPath);
    const headers = new HeaderBudget(guestPath, EXPORT_HEADER_BYTES);
    for (const e of manifestEntries(manifest, WALK)) {
      budget.add(e);
      headers.add(gnuHeaderBytes(e), e.path);
    }
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
}
