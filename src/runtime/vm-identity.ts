import { randomBytes } from "node:crypto";
import type { RunningVm } from "./vmm-backend.js";

/** Host randomness handed to each guest: a full CRNG reseed (32 bytes) twice over. */
const ENTROPY_BYTES = 64;

/**
 * Makes a VM its own machine right after it starts: copies restored from one saved state would
 * otherwise share the kernel RNG state (the same /dev/urandom bytes and UUIDs), the clock of the
 * moment it was saved, the hostname and the image's machine-id.
 */
export async function giveVmItsOwnIdentity(vm: RunningVm, hostname: string): Promise<void> {
  await vm.agent.setIdentity({ hostname, machineId: randomBytes(16).toString("hex"), entropy: randomBytes(ENTROPY_BYTES) });
}

/** A hostname for a VM with no name of its own (one-shot runs). */
export function throwawayHostname(): string {
  return `pyro-${randomBytes(4).toString("hex")}`;
}
