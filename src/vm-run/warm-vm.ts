import type { PyroPaths } from "../paths.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { giveVmItsOwnIdentity, throwawayHostname } from "../runtime/vm-identity.js";
import { hostCanKeepWarmVm, WarmSlot } from "../runtime/warm-slot.js";
import { launchDisposableVm } from "./disposable-vm.js";

/**
 * One VM kept ready for the next one-shot run (#10 item 7): restored from the template, its guest
 * already through a first command (under TCG, the first run of any guest code pays for its
 * translation, ~200 ms of a fresh VM's first exec), then paused so it costs no CPU while it waits.
 * Taking it resumes it and gives it a new identity (entropy, clock, hostname, machine-id), as any
 * restored VM gets: it never carried anything of a user's. A taken VM is the caller's to dispose;
 * the slot then prepares the next one. It dies with this process like every one-shot VM.
 */

export interface WarmVmOptions {
  /** The environment and shape it is kept for; runs of anything else start their own VM. */
  environment: string;
  vcpuCount: number;
  memMib: number;
  /** Below this much MemAvailable, no VM is kept (default WARM_VM_MIN_HOST_AVAILABLE_MIB). */
  minAvailableMib?: number;
}

export class WarmVmSlot {
  private readonly slot: WarmSlot<RunningVm>;

  constructor(
    private readonly paths: PyroPaths,
    readonly options: WarmVmOptions,
  ) {
    this.slot = new WarmSlot({ prepare: () => this.prepare(), lost: (vm) => vm.exited, discard: (vm) => vm.dispose() });
  }

  /**
   * Starts preparing a VM unless one is ready or being prepared, the slot is closed, or memory is
   * low. Resolves whether one is ready (callers need not wait).
   */
  fill(): Promise<boolean> {
    return this.slot.fill();
  }

  private async prepare(): Promise<RunningVm | undefined> {
    if (!(await hostCanKeepWarmVm(this.options.minAvailableMib))) return undefined;
    const vm = await launchDisposableVm(this.paths, this.options.environment, {
      vcpuCount: this.options.vcpuCount,
      memMib: this.options.memMib,
      network: false,
    });
    try {
      await vm.agent.exec({ command: ["true"], cwd: "/", timeoutMs: 30_000 });
      await vm.pause();
    } catch (error) {
      await vm.dispose();
      throw error;
    }
    return vm;
  }

  /**
   * The ready VM if it is one for this environment and shape without a NIC, resumed and made its
   * own machine; undefined otherwise (or while it is still being prepared: the run does not wait).
   */
  async take(environment: string, shape: { vcpuCount: number; memMib: number; network: boolean }): Promise<RunningVm | undefined> {
    const { options } = this;
    if (shape.network || environment !== options.environment || shape.vcpuCount !== options.vcpuCount || shape.memMib !== options.memMib) return undefined;
    const vm = await this.slot.claim();
    if (!vm) return undefined;
    try {
      await vm.resume();
      await giveVmItsOwnIdentity(vm, throwawayHostname());
      return vm;
    } catch {
      await vm.dispose();
      return undefined;
    }
  }

  /** Stops the kept VM (if any); the next fill prepares another. */
  empty(): Promise<void> {
    return this.slot.empty();
  }

  /** Stops the kept VM (if any) and keeps no other. */
  close(): Promise<void> {
    return this.slot.close();
  }
}
