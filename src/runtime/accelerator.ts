import { constants } from "node:fs";
import { access, readFile, rm } from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import type { PyroPaths } from "../paths.js";
import { runHostCommandRaw } from "../process/host-command.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import type { Accelerator } from "./vmm-backend.js";

export interface AcceleratorChoice {
  accel: Accelerator;
  /** Why: "probe boot succeeded", "/dev/kvm missing", "PYRO_ACCEL=tcg", … */
  reason: string;
  kvmDevice: { exists: boolean; readable: boolean; writable: boolean };
}

const ProbeRecord = z.object({ key: z.string(), kvmUsable: z.boolean(), reason: z.string() });

/** The host TSC rate in kHz, which TCG's guest TSC runs at (runtime-facts G1). */
export async function hostTscKhz(): Promise<number | undefined> {
  try {
    const mhz = /cpu MHz\s*:\s*([0-9.]+)/.exec(await readFile("/proc/cpuinfo", "utf8"))?.[1];
    return mhz ? Math.round(Number(mhz) * 1000) : undefined;
  } catch {
    return undefined;
  }
}

async function kvmDeviceState(): Promise<AcceleratorChoice["kvmDevice"]> {
  const can = (mode: number) =>
    access("/dev/kvm", mode).then(
      () => true,
      () => false,
    );
  return { exists: await can(constants.F_OK), readable: await can(constants.R_OK), writable: await can(constants.W_OK) };
}

export interface ProbeInputs {
  qemuBinary: string;
  /** Identifies the QEMU build (e.g. binary size and mtime); part of the probe cache key. */
  qemuIdentity: string;
  kernelPath: string;
  kernelPackage: string;
  initramfsPath: string;
}

/**
 * Picks KVM when a real probe boot under KVM reaches the initramfs, else TCG. /dev/kvm alone proves
 * nothing: on nested PVM hosts it exists but cannot run a stock kernel. The verdict is cached per
 * host kernel, QEMU and guest kernel, so the probe runs once.
 */
export async function chooseAccelerator(paths: PyroPaths, inputs: ProbeInputs, env: NodeJS.ProcessEnv = process.env): Promise<AcceleratorChoice> {
  const kvmDevice = await kvmDeviceState();
  const forced = env.PYRO_ACCEL;
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: `PYRO_ACCEL=${forced}`, kvmDevice };
  if (!kvmDevice.exists) return { accel: "tcg", reason: "/dev/kvm does not exist", kvmDevice };
  if (!kvmDevice.readable || !kvmDevice.writable) return { accel: "tcg", reason: "/dev/kvm is not readable and writable by this user", kvmDevice };
  const key = [release(), inputs.qemuIdentity, inputs.kernelPackage].join("|");
  const recordPath = join(paths.cacheDir, "accel-probe.json");
  const cached = await readJsonIfValid(recordPath, ProbeRecord);
  const record = cached?.key === key ? cached : { key, ...(await probeKvm(paths, inputs)) };
  if (record !== cached) await writeJsonAtomic(recordPath, record);
  return { accel: record.kvmUsable ? "kvm" : "tcg", reason: record.reason, kvmDevice };
}

async function probeKvm(paths: PyroPaths, inputs: ProbeInputs): Promise<{ kvmUsable: boolean; reason: string }> {
  const dir = await makePrivateTempDir(paths.runtimeDir, "probe-");
  const consolePath = join(dir, "console.log");
  try {
    const result = await runHostCommandRaw(
      inputs.qemuBinary,
      [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-M",
        "microvm",
        "-m",
        "128",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-kernel",
        inputs.kernelPath,
        "-initrd",
        inputs.initramfsPath,
        "-serial",
        `file:${consolePath}`,
        "-append",
        "console=ttyS0 quiet panic=-1 pyro.probe=1",
      ],
      { timeoutMs: 20_000, privateFiles: true },
    ).catch((e: Error) => ({ exitCode: -1, stderr: e.message }));
    const consoleText = await readFile(consolePath, "utf8").catch(() => "");
    if (consoleText.includes("PYRO-PROBE-OK")) return { kvmUsable: true, reason: "KVM probe boot succeeded" };
    const why = result.stderr.trim().split("\n").slice(-1)[0] || `qemu exited with ${result.exitCode}`;
    return { kvmUsable: false, reason: `KVM probe boot failed (${why.slice(0, 200)}); using TCG` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
