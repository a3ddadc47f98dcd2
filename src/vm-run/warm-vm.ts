import { readFile } from "node:fs/promises";
import { WARM_VM_MIN_HOST_AVAILABLE_MIB } from "../runtime/guest-limits.js";
import type { PyroPaths } from "../paths.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { giveVmItsOwnIdentity, throwawayHostname } from "../runtime/vm-identity.js";
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
  private ready: Promise<RunningVm | undefined> | undefined;
  /** The kept VM's process exited (killed behind pyro's back): it cannot be taken. */
  private died = false;
  private closed = false;

  constructor(
    private readonly paths: PyroPaths,
    readonly options: WarmVmOptions,
  ) {}

  /**
   * Starts preparing a VM unless one is ready or being prepared, the slot is closed, or memory is
   * low. Resolves whether one is ready (callers need not wait).
   */
  fill(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.ready) return this.ready.then((vm) => vm !== undefined && !this.died);
    const preparing = this.prepare().catch(() => undefined); // a failed warm-up only means the next run starts its own
    this.ready = preparing;
    this.died = false;
    void preparing.then((vm) => {
      // None (memory was low, the start failed) or gone before it was taken: the next fill tries again.
      if (!vm && this.ready === preparing) this.ready = undefined;
      void vm?.exited.then(() => {
        if (this.ready !== preparing) return;
        this.ready = undefined;
        this.died = true;
      });
    });
    return preparing.then((vm) => vm !== undefined);
  }

  private async prepare(): Promise<RunningVm | undefined> {
    if ((await memAvailableMib()) < (this.options.minAvailableMib ?? WARM_VM_MIN_HOST_AVAILABLE_MIB)) return undefined;
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
    if (this.closed) {
      await vm.dispose();
      return undefined;
    }
    return vm;
  }

  /**
   * The ready VM if it is one for this environment and shape without a NIC, resumed and made its
   * own machine; undefined otherwise (or while it is still being prepared: the run does not wait).
   */
  async take(environment: string, shape: { vcpuCount: number; memMib: number; network: boolean }): Promise<RunningVm | undefined> {
    const { options } = this;
    if (!this.ready || shape.network || environment !== options.environment || shape.vcpuCount !== options.vcpuCount || shape.memMib !== options.memMib)
      return undefined;
    const pending = this.ready;
    const vm = await Promise.race([pending, new Promise<undefined>((r) => setImmediate(() => r(undefined)))]);
    if (!vm || this.ready !== pending || this.died) return undefined;
    this.ready = undefined;
    try {
      await vm.resume();
      await giveVmItsOwnIdentity(vm, throwawayHostname());
      return vm;
    } catch {
      await vm.dispose();
      return undefined;
    }
  }

  /** Stops the kept VM (if any) and keeps no other. */
  async close(): Promise<void> {
    this.closed = true;
    const vm = await this.ready;
    this.ready = undefined;
    await vm?.dispose();
  }
}

async function memAvailableMib(): Promise<number> {
  const text = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kib = Number(/^MemAvailable:\s+(\d+) kB/m.exec(text)?.[1]);
  return Number.isFinite(kib) ? kib / 1024 : 0;
}
