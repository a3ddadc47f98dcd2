import { readFile } from "node:fs/promises";
import { WARM_VM_MIN_HOST_AVAILABLE_MIB } from "./guest-limits.js";

/** How a kept thing is made, watched and thrown away. */
export interface WarmSlotHooks<T> {
  /** Makes one, or undefined when none should be kept now (memory low…). */
  prepare(): Promise<T | undefined>;
  /** Resolves when a kept one stops being usable behind pyro's back (its VM process exited). */
  lost(item: T): Promise<unknown>;
  /** Throws a kept one away (its VM and files). */
  discard(item: T): Promise<void>;
}

/**
 * One thing kept ready ahead of demand (#10 item 7: a paused VM for the next run or create):
 * prepared in the background on `fill`, taken at most once by `claim`, never waited for by a
 * caller that wants it now, and prepared again on the next fill.
 */
export class WarmSlot<T> {
  /** The kept one, or the one being prepared; a kept one lost behind pyro's back is cleared from here. */
  private ready: Promise<T | undefined> | undefined;
  private closed = false;

  constructor(private readonly hooks: WarmSlotHooks<T>) {}

  /**
   * Starts preparing one unless one is ready or being prepared, or the slot is closed. Resolves
   * whether one is ready (callers need not wait).
   */
  fill(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    const pending = this.ready;
    // Still kept when it settles: not lost (nor taken) meanwhile.
    if (pending) return pending.then((item) => item !== undefined && this.ready === pending);
    const preparing = this.prepareUnlessClosed().catch(() => undefined); // a failed warm-up only means the next caller starts its own
    this.ready = preparing;
    void preparing.then((item) => {
      // None (memory was low, the start failed) or lost before it was taken: the next fill tries again.
      if (item === undefined && this.ready === preparing) this.ready = undefined;
      if (item !== undefined)
        void this.hooks.lost(item).then(() => {
          if (this.ready !== preparing) return; // taken: the taker's now
          this.ready = undefined;
          void this.hooks.discard(item).catch(() => undefined); // what it left (files, a lock) goes with it
        });
    });
    return preparing.then((item) => item !== undefined);
  }

  private async prepareUnlessClosed(): Promise<T | undefined> {
    const item = await this.hooks.prepare();
    if (item !== undefined && this.closed) {
      await this.hooks.discard(item);
      return undefined;
    }
    return item;
  }

  /** The kept one if it is ready now (one still being prepared is not waited for); the slot is then empty. */
  async claim(): Promise<T | undefined> {
    const pending = this.ready;
    if (!pending) return undefined;
    const item = await Promise.race([pending, new Promise<undefined>((r) => setImmediate(() => r(undefined)))]);
    if (item === undefined || this.ready !== pending) return undefined; // none, or taken or lost meanwhile
    this.ready = undefined;
    return item;
  }

  /** Throws the kept one away (waiting for one being prepared); the next fill makes another. */
  async empty(): Promise<void> {
    const pending = this.ready;
    if (!pending) return;
    const item = await pending;
    if (this.ready !== pending) return; // taken meanwhile
    this.ready = undefined;
    if (item !== undefined) await this.hooks.discard(item);
  }

  /** Throws the kept one away and keeps no other. */
  async close(): Promise<void> {
    this.closed = true;
    await this.empty();
  }
}

/** Whether the host has memory to spare for a kept VM (MemAvailable at least `minAvailableMib`). */
export async function hostCanKeepWarmVm(minAvailableMib = WARM_VM_MIN_HOST_AVAILABLE_MIB): Promise<boolean> {
  const text = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kib = Number(/^MemAvailable:\s+(\d+) kB/m.exec(text)?.[1]);
  return (Number.isFinite(kib) ? kib / 1024 : 0) >= minAvailableMib;
}
