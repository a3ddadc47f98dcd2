import { stat } from "node:fs/promises";
import { ensureAgent } from "../guest-agent/agent-binary.js";
import { ensureGuestKernel, withMemoryReturnModule, type GuestKernel } from "../guest-kernel/guest-kernel.js";
import { ensureInitramfs, type Initramfs } from "../guest-kernel/initramfs.js";
import type { PyroPaths } from "../paths.js";
import { ensurePrivateDir } from "../storage/private-storage.js";
import { chooseAccelerator, hostTscKhz, type AcceleratorChoice } from "./accelerator.js";
import { QemuBackend } from "./qemu/qemu-backend.js";
import { ensurePrivateRamDiscard } from "./qemu/private-ram-discard.js";
import { qemuBinary as findQemu } from "./running-vm-control.js";
import type { VmmBackend } from "./vmm-backend.js";

/** Everything needed to boot guests on this host, prepared once per process. */
export interface GuestRuntime {
  readonly backend: VmmBackend;
  readonly kernel: GuestKernel;
  readonly initramfs: Initramfs;
  readonly accelerator: AcceleratorChoice;
  readonly agentPath: string;
  /** Whether guests can hand freed pages back (the kernel has its balloon driver); see VmLaunchSpec.freePageReporting. */
  readonly memoryReturn: boolean;
  /**
   * host/private-ram-discard's library, where it is built: with it, VMs whose RAM is a copy-on-write
   * file get free page reporting too (see VmLaunchSpec.freePageReporting).
   */
  readonly privateRamDiscard?: string;
  /** Identifies the QEMU build: saved VM states only restore into the same one. */
  readonly qemuIdentity: string;
}

const cache = new Map<string, Promise<GuestRuntime>>();

/**
 * Prepares (downloading/building when missing) the guest kernel, agent and initramfs, picks the
 * accelerator, and returns the VMM backend. Cached per cache directory for the life of the process.
 */
export async function prepareGuestRuntime(paths: PyroPaths, onProgress?: (message: string) => void): Promise<GuestRuntime> {
  // Checked on every call, before anything is built or booted: a directory another user swapped in
  // since the last call must stop us here, with a clear error.
  await ensurePrivateDir(paths.cacheDir);
  await ensurePrivateDir(paths.runtimeDir);
  let pending = cache.get(paths.cacheDir);
  if (!pending) {
    pending = buildGuestRuntime(paths, onProgress ? { onProgress } : {});
    cache.set(paths.cacheDir, pending);
    pending.catch(() => cache.delete(paths.cacheDir));
  }
  return pending;
}

/**
 * Builds a runtime without the per-process cache. `agentPath` puts another agent binary in the
 * initramfs: only code can ask for it (the hostile-agent tests do); pyro itself always goes through
 * prepareGuestRuntime and the real agent.
 */
export async function buildGuestRuntime(paths: PyroPaths, options: { agentPath?: string; onProgress?: (message: string) => void } = {}): Promise<GuestRuntime> {
  const { onProgress } = options;
  const qemuBinary = findQemu();
  const [kernel, agentPath, qemuStat, tscKhz, privateRamDiscard] = await Promise.all([
    ensureGuestKernel(paths, onProgress ? { onProgress } : {}).then(withMemoryReturnModule),
    options.agentPath ?? ensureAgent(onProgress),
    stat(qemuBinary),
    hostTscKhz(),
    ensurePrivateRamDiscard(onProgress),
  ]);
  const initramfs = await ensureInitramfs(paths, kernel, agentPath);
  const qemuIdentity = `${qemuStat.size}-${qemuStat.mtimeMs}`;
  const accelerator = await chooseAccelerator(paths, {
    qemuBinary,
    qemuIdentity,
    kernelPath: kernel.vmlinuxPath,
    kernelPackage: kernel.package,
    initramfsPath: initramfs.path,
  });
  const backend = new QemuBackend({ qemuBinary, accel: accelerator.accel, tscKhz, ...(privateRamDiscard ? { privateRamDiscard } : {}) });
  return {
    backend,
    kernel,
    initramfs,
    accelerator,
    agentPath,
    qemuIdentity,
    memoryReturn: Boolean(kernel.memoryReturnModule),
    ...(privateRamDiscard ? { privateRamDiscard } : {}),
  };
}
