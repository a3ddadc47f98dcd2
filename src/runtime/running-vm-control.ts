import type { PyroPaths } from "../paths.js";
import { requireExecutable } from "../process/host-command.js";
import { ensurePrivateDir } from "../storage/private-storage.js";
import { QemuBackend } from "./qemu/qemu-backend.js";
import type { RunningVmControl } from "./vmm-backend.js";

/** The QEMU this host runs guests with (a typed error naming the package when it is missing). */
export function qemuBinary(): string {
  return requireExecutable("qemu-system-x86_64", "qemu-system-x86");
}

/**
 * The backend's hold on VMs that already run (attach, status, find, stop, kill): all that an exec,
 * a file read or a diff of a running workspace needs of it. Unlike prepareGuestRuntime it checks,
 * hashes and builds none of what a boot needs (kernel, initramfs, accelerator choice), which was
 * most of such a command's start-up work. The same private-directory checks come first.
 */
export async function runningVmControl(paths: PyroPaths): Promise<RunningVmControl> {
  await ensurePrivateDir(paths.cacheDir);
  await ensurePrivateDir(paths.runtimeDir);
  // The accelerator and TSC rate shape a launch only, which this hold is typed without; a VM's own
  // accelerator comes from its handle.
  return new QemuBackend({ qemuBinary: qemuBinary(), accel: "tcg", tscKhz: undefined });
}
