import { rename, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { z } from "zod";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand, runHostCommandRaw } from "../process/host-command.js";

/**
 * qcow2 layering, read from the files themselves: which disk depends on which is whatever the
 * images say, never a record field that a crash can leave stale.
 */
const ChainEntry = z.object({ filename: z.string() });
const Chain = z.array(ChainEntry).min(1);

function qemuImg(): string {
  return requireExecutable("qemu-img", "qemu-utils");
}

/**
 * The files `disk` reads through, nearest first, itself excluded. Fails if any layer is missing or
 * unreadable (the disk would not open). `-U`: the disk may be in use by a running VM.
 */
export async function backingChain(disk: string): Promise<string[]> {
  const r = await runHostCommandRaw(qemuImg(), ["info", "--backing-chain", "--output=json", "-U", disk], { timeoutMs: 60_000 });
  if (r.exitCode !== 0) {
    throw new PyroError("GUEST_OPERATION_FAILED", `the disk ${disk} does not open: ${r.stderr.trim().split("\n").slice(-1)[0] ?? "qemu-img failed"}`, { disk });
  }
  const parsed = Chain.safeParse(JSON.parse(r.stdout.toString("utf8")));
  if (!parsed.success) throw new PyroError("GUEST_OPERATION_FAILED", `qemu-img described ${disk} in an unexpected form`, { disk });
  return parsed.data.slice(1).map((e) => resolve(dirname(disk), e.filename));
}

/** The temp name a new overlay is built under before it replaces a disk; recovery removes leftovers. */
export function partialOverlayPath(disk: string): string {
  return join(dirname(disk), `.${basename(disk)}.partial`);
}

/**
 * Replaces `disk` with an empty overlay on `backing`, atomically: a crash leaves the old disk or
 * the new one, never none.
 */
export async function replaceWithOverlay(disk: string, backing: string, format: "raw" | "qcow2"): Promise<void> {
  const partial = partialOverlayPath(disk);
  await rm(partial, { force: true });
  await runHostCommand(qemuImg(), ["create", "-q", "-f", "qcow2", "-b", backing, "-F", format, partial], { privateFiles: true });
  await rename(partial, disk);
}
