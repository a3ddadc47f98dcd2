import { createHash, randomBytes } from "node:crypto";
import { realpath, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { environmentSlug } from "../environments/catalog.js";
import type { InstalledEnvironment } from "../environments/environment-store.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import type { GuestRuntime } from "../runtime/guest-runtime.js";
import type { VmLaunchSpec } from "../runtime/vmm-backend.js";
import { bootTimeoutMs } from "../vm-run/disposable-vm.js";
import { pathExists } from "../storage/path-exists.js";
import { makePrivateSubdir } from "../storage/private-storage.js";

/**
 * A booted-once guest saved to disk: restoring it gives a ready agent in ~0.1 s instead of a ~1.5 s
 * cold boot under TCG (runtime-facts §5). One per environment and machine shape.
 */
export interface BootTemplate {
  key: string;
  statePath: string;
  /** Frozen qcow2 the template guest ran on; workspace disks are layered on it. */
  diskPath: string;
}

export interface MachineShape {
  vcpuCount: number;
  memMib: number;
}

const TemplateManifest = z.object({ key: z.string(), createdAt: z.string(), saveMs: z.number() });

/** Everything a saved state depends on: change any of it and the template is rebuilt. */
function templateKey(runtime: GuestRuntime, env: InstalledEnvironment, shape: MachineShape): string {
  return createHash("sha256")
    .update(
      JSON.stringify([
        runtime.accelerator.accel,
        runtime.kernel.package,
        runtime.initramfs.key,
        runtime.qemuIdentity,
        env.spec.name,
        env.manifest.version,
        env.manifest.builtAt,
        shape.vcpuCount,
        shape.memMib,
        WORKSPACE_MACHINE_VERSION,
      ]),
    )
    .digest("hex")
    .slice(0, 16);
}

/** Bump when workspaceLaunchSpec changes the machine, so old saved states are not restored into it. */
const WORKSPACE_MACHINE_VERSION = 1;

/** The machine every workspace VM runs as; templates are saved from exactly this shape (G10). */
export function workspaceLaunchSpec(runtime: GuestRuntime, shape: MachineShape, diskPath: string, runDir: string, network: VmLaunchSpec["network"] = "none"): VmLaunchSpec {
  return {
    kernelPath: runtime.kernel.vmlinuxPath,
    initramfsPath: runtime.initramfs.path,
    rootDisk: { path: diskPath, format: "qcow2", cache: "writeback" },
    vcpuCount: shape.vcpuCount,
    memMib: shape.memMib,
    hostname: "pyro",
    network,
    runDir,
    bootTimeoutMs: bootTimeoutMs(),
    dieWithParent: false,
    ownsRunDir: false,
  };
}

function templateDir(paths: PyroPaths, env: InstalledEnvironment, shape: MachineShape, key: string): string {
  return join(paths.cacheDir, "templates", `${environmentSlug(env.spec.name)}-${shape.vcpuCount}c-${shape.memMib}m-${key}`);
}


/** The template if it is already built (no boot). */
export async function findBootTemplate(paths: PyroPaths, runtime: GuestRuntime, env: InstalledEnvironment, shape: MachineShape): Promise<BootTemplate | undefined> {
  const key = templateKey(runtime, env, shape);
  const dir = templateDir(paths, env, shape, key);
  const manifest = await readJsonIfValid(join(dir, "manifest.json"), TemplateManifest);
  const template = { key, statePath: join(dir, "state.bin"), diskPath: join(dir, "disk.qcow2") };
  return manifest?.key === key && (await pathExists(template.statePath)) && (await pathExists(template.diskPath)) ? template : undefined;
}

/** Returns the template for this environment and shape, booting and saving one if needed. */
export async function ensureBootTemplate(paths: PyroPaths, runtime: GuestRuntime, env: InstalledEnvironment, shape: MachineShape): Promise<BootTemplate> {
  const found = await findBootTemplate(paths, runtime, env, shape);
  if (found) return found;
  const key = templateKey(runtime, env, shape);
  const dir = templateDir(paths, env, shape, key);
  const work = `${dir}.partial-${process.pid}-${randomBytes(3).toString("hex")}`;
  const runDir = join(paths.runtimeDir, `tpl-${randomBytes(4).toString("hex")}`);
  await makePrivateSubdir(work);
  try {
    const disk = join(work, "disk.qcow2");
    // The real path: a template outlives the (possibly linked, e.g. per-test) directory it was built from.
    await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["create", "-q", "-f", "qcow2", "-b", await realpath(env.imagePath), "-F", "raw", disk], { privateFiles: true });
    const spec = { ...workspaceLaunchSpec(runtime, shape, disk, runDir), dieWithParent: true, ownsRunDir: true };
    const vm = await runtime.backend.launch(spec);
    const started = Date.now();
    try {
      // Disconnect first: the saved agent then waits for a new host, as every restored copy will.
      vm.agent.close();
      await vm.saveState(join(work, "state.bin"));
    } finally {
      await vm.dispose();
    }
    await writeJsonAtomic(join(work, "manifest.json"), { key, createdAt: new Date().toISOString(), saveMs: Date.now() - started });
    await rename(work, dir).catch(async (error: NodeJS.ErrnoException) => {
      // Another process finished the same template first: use theirs.
      if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
      await rm(work, { recursive: true, force: true });
    });
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    throw error;
  }
  const built = await findBootTemplate(paths, runtime, env, shape);
  if (!built) throw new Error(`boot template ${dir} failed validation after build`);
  return built;
}
