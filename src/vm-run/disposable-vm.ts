import { rmSync } from "node:fs";
import { isPyroError, PyroError } from "../errors.js";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { egressNetwork } from "../network/egress-launch.js";
import { registerExitCleanup, shuttingDown } from "../process/exit-cleanup.js";
import { dirname, join } from "node:path";
import { EnvironmentStore } from "../environments/environment-store.js";
import type { PyroPaths } from "../paths.js";
import { processAlive } from "../process/process-alive.js";
import { createEmptyOverlay } from "../storage/qcow2-overlay.js";
import { prepareGuestRuntime } from "../runtime/guest-runtime.js";
import { giveVmItsOwnIdentity, throwawayHostname } from "../runtime/vm-identity.js";
import { makePrivateSubdir, makePrivateTempDir, PRIVATE_FILE_MODE } from "../storage/private-storage.js";
import type { RunningVm, VmLaunchSpec, VmmBackend } from "../runtime/vmm-backend.js";
import { ensureBootTemplate, freePageReportingFor, templateMemoryMode, type BootTemplate } from "../workspaces/boot-templates.js";

export interface DisposableVmOptions {
  vcpuCount: number;
  memMib: number;
  network: boolean;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

const OWNER_FILE = "owner.pid";

/** Per-attempt boot deadline; generous because a busy 2-core CI host boots TCG guests slowly. */
export function bootTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const fromEnv = Number(env.PYRO_BOOT_TIMEOUT_MS);
  return Number.isFinite(fromEnv) && fromEnv > 0 ? fromEnv : 30_000;
}

/**
 * Removes run directories whose owning pyro process is gone (it was SIGKILLed: its VMM died with it
 * through pdeathsig, but nothing could delete the files). Cheap enough to do before every run.
 */
export async function sweepOrphanedRunDirs(runtimeDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const entry of await readdir(runtimeDir).catch(() => [] as string[])) {
    if (!entry.startsWith("run-")) continue;
    const dir = join(runtimeDir, entry);
    const owner = Number((await readFile(join(dir, OWNER_FILE), "utf8").catch(() => "")).trim());
    // A directory without an owner file is one being created right now by someone else; leave it.
    if (owner > 0 && !processAlive(owner)) {
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  return removed;
}

/**
 * Starts a throwaway VM of `environment` on a fresh qcow2 overlay in its own run directory: restored
 * from the boot template of its shape (built on the first run of a shape), or booted cold when it
 * has a NIC or no template works. The VM dies with this process, and `dispose()` removes the overlay
 * with everything else.
 */
export async function launchDisposableVm(paths: PyroPaths, environment: string, options: DisposableVmOptions): Promise<RunningVm> {
  const store = new EnvironmentStore(paths);
  // The environment check comes first and alone: when it fails, no preparation is left running
  // in the background, writing into the cache after the caller got its error.
  const env = await store.require(environment);
  const runtime = await prepareGuestRuntime(paths, options.onProgress);
  await sweepOrphanedRunDirs(paths.runtimeDir);
  const runDir = await makePrivateTempDir(paths.runtimeDir, "run-");
  // Until the VM object exists and owns it, the run directory is ours to remove on any exit path.
  const unregister = registerExitCleanup(
    () => rmSync(runDir, { recursive: true, force: true }),
    () => rm(runDir, { recursive: true, force: true }),
  );
  try {
    await writeFile(join(runDir, OWNER_FILE), `${process.pid}\n`, { mode: PRIVATE_FILE_MODE });
    const overlay = join(runDir, "root.qcow2");
    // One-shot egress: public destinations only, through the proxy (no host or private networks).
    const network = options.network ? await egressNetwork(join(runDir, "egress-policy.json"), { allow: [] }, paths.runtimeDir) : ("none" as const);
    const spec: VmLaunchSpec = {
      kernelPath: runtime.kernel.vmlinuxPath,
      initramfsPath: runtime.initramfs.path,
      rootDisk: { path: overlay, format: "qcow2", cache: "unsafe" },
      freePageReporting: freePageReportingFor(runtime, await templateMemoryMode(paths), network),
      vcpuCount: options.vcpuCount,
      memMib: options.memMib,
      hostname: "pyro",
      network,
      runDir,
      bootTimeoutMs: bootTimeoutMs(),
      dieWithParent: true,
      ownsRunDir: true,
    };
    // Templates are saved without a NIC; a networked machine differs (G10) and boots cold.
    const template =
      network === "none"
        ? await ensureBootTemplate(paths, runtime, env, { vcpuCount: options.vcpuCount, memMib: options.memMib }, options.onProgress).catch(
            unlessGuestCannotStart,
          )
        : undefined;
    if (template) {
      const restored = await restoreFromTemplate(runtime.backend, spec, template, options.signal);
      if (restored) return restored;
    }
    // A restore cut short by a termination signal (whose cleanup killed its VM) is not retried:
    // making the run directory again would race that cleanup's removal and could outlive it.
    if (shuttingDown()) throw new PyroError("CANCELLED", "pyro is shutting down");
    // A restore that failed took the run directory with it (the VM owns it): make it again.
    await makePrivateSubdir(runDir);
    await writeFile(join(runDir, OWNER_FILE), `${process.pid}\n`, { mode: PRIVATE_FILE_MODE });
    await createEmptyOverlay(overlay, env.imagePath, "raw");
    const vm = await runtime.backend.launch(spec, options.signal);
    try {
      // The image's machine-id is every VM's: each run gets its own, and the same kind of hostname as a restore.
      await giveVmItsOwnIdentity(vm, throwawayHostname());
    } catch (error) {
      await vm.dispose();
      throw error;
    }
    return vm;
  } catch (error) {
    await rm(runDir, { recursive: true, force: true });
    throw error;
  } finally {
    unregister();
  }
}

/**
 * Resumes the template on an overlay of its disk, its RAM file mapped copy-on-write where it has one.
 * Undefined when the restore failed (a stale or incompatible template): the caller boots cold.
 */
async function restoreFromTemplate(
  backend: VmmBackend,
  spec: VmLaunchSpec,
  template: BootTemplate,
  signal: AbortSignal | undefined,
): Promise<RunningVm | undefined> {
  await createEmptyOverlay(spec.rootDisk.path, template.diskPath, "qcow2");
  // The template has a (never mounted) /workspace disk; a restored copy needs one in its place.
  const workspaceDisk = join(dirname(spec.rootDisk.path), "workspace.qcow2");
  await createEmptyOverlay(workspaceDisk, template.workspaceDiskPath, "raw");
  const memoryFile = template.memoryPath ? { memoryFile: { path: template.memoryPath, share: false } } : {};
  let vm: RunningVm | undefined;
  try {
    vm = await backend.launch(
      { ...spec, workspaceDisk: { path: workspaceDisk, format: "qcow2", cache: "unsafe" }, incomingState: template.statePath, ...memoryFile },
      signal,
    );
    await giveVmItsOwnIdentity(vm, throwawayHostname());
    return vm;
  } catch (error) {
    if (vm) await vm.dispose();
    if (signal?.aborted) throw error;
    return undefined;
  }
}

/**
 * A template that could not be built leaves a cold boot to try, unless the guest itself failed to
 * start (/init reported it: the image, not the template, is at fault), which a cold boot would repeat.
 */
function unlessGuestCannotStart(error: unknown): undefined {
  if (isPyroError(error, "GUEST_BOOT_FAILED") && error.details.retryable === false && error.details.console !== undefined) throw error;
  return undefined;
}
