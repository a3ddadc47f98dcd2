import { rm } from "node:fs/promises";
import { isPyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { FROZEN_COPY_HOLD_MS } from "./workspace-limits.js";

/**
 * A consistent moment of a running workspace's /workspace disk, for the host to read: the top qcow2
 * layer copied while the guest's filesystem is frozen (the layers below never change, so they are
 * read in place). ext4's freeze flushes every write and checkpoints the journal, so the copy is a
 * clean filesystem (no journal to replay) and the guest keeps running: only its writers to
 * /workspace wait, for as long as the copy takes.
 *
 * The freeze is bounded twice: pyro asks for FROZEN_COPY_HOLD_MS and stops its copy past it, and the
 * agent thaws on its own after that (or its own cap), when this connection closes, and when a new
 * host connects, so a pyro killed mid-copy leaves a guest that writes again. Where the
 * freeze cannot be had (an agent without fs.freeze, or /workspace already frozen inside the guest)
 * or did not hold for the whole copy, the VM is paused for the copy instead, as before fs.freeze.
 *
 * The guest chooses every byte of the copy: a root in the guest can thaw its filesystem mid-copy
 * or write the block device directly, so readers treat the copy as hostile whichever way it was
 * held. Its size is bounded by the disk (the overlay file QEMU writes), and the time the guest can
 * keep the host copying while frozen by the freeze's own cap.
 */

/** How the copy's moment was held. */
export type DiskMoment = "frozen" | "paused";

/** Copies the top layer `disk` of `vm`'s /workspace disk to `dest` at one moment; says how it was held. */
export async function copyTopLayerAtOneMoment(vm: RunningVm, disk: string, dest: string): Promise<DiskMoment> {
  if (await frozenCopy(vm, disk, dest)) return "frozen";
  await rm(dest, { force: true });
  await pausedCopy(vm, disk, dest);
  return "paused";
}

/** `cp --sparse=always`: the overlay's unallocated ranges stay holes in the copy. */
function copySparse(from: string, to: string, timeoutMs?: number): Promise<unknown> {
  return runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", from, to], { privateFiles: true, ...(timeoutMs ? { timeoutMs } : {}) });
}

/**
 * The copy made while /workspace is frozen; false where no freeze could be had or it did not hold
 * until the copy was done (the agent's cap passed, or something in the guest thawed it).
 */
async function frozenCopy(vm: RunningVm, disk: string, dest: string): Promise<boolean> {
  let freeze: { token: number; holdMs: number };
  try {
    freeze = await vm.agent.freezeWorkspace({ holdMs: FROZEN_COPY_HOLD_MS });
  } catch (error) {
    // An older agent (unknown_op) or a filesystem frozen already (busy): the pause still works.
    if (isPyroError(error, "GUEST_OPERATION_FAILED")) return false;
    throw error;
  }
  let copied = false;
  try {
    // Past the freeze's hold the copy is worthless: stop it rather than let the guest keep the host busy.
    await copySparse(disk, dest, freeze.holdMs);
    copied = true;
  } catch (error) {
    if (!isPyroError(error, "HOST_COMMAND_FAILED")) throw error;
  } finally {
    // Thawed even when the copy failed: the guest's writers wait until then (or the agent's cap).
    const { held } = await vm.agent.thawWorkspace(freeze.token);
    copied &&= held;
  }
  return copied;
}

/** The copy made while the VM is paused (after a sync, so what the guest wrote is on the disk). */
async function pausedCopy(vm: RunningVm, disk: string, dest: string): Promise<void> {
  await vm.agent.sync();
  await vm.pause();
  try {
    await copySparse(disk, dest);
  } finally {
    await vm.resume();
  }
}
