import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePaths } from "../../src/paths.js";
import { SHARED_CACHE_ENV } from "./isolated-home.js";

/**
 * This test file's own paths (isolated-home.ts gave it a PYRO_HOME), whose cache links to the
 * suite's shared, read-only build products.
 */
export const testPaths = resolvePaths();

/** The suite's shared cache (prepared by scripts/setup.sh): kernels, initramfs, environments. */
export const sharedCacheDir = process.env[SHARED_CACHE_ENV] ?? testPaths.cacheDir;

export const CLI = join(import.meta.dirname, "..", "..", "src", "cli", "main.js");

/**
 * A throwaway PYRO_HOME that reuses the shared kernel and initramfs (so no download) but has its
 * own environments and runtime dirs, for tests that install broken environments on purpose.
 */
export async function tempHome(): Promise<{ home: string; dispose: () => Promise<void> }> {
  const home = await mkdtemp(join(tmpdir(), "pyro-test-home-"));
  await mkdir(join(home, "cache"), { recursive: true });
  for (const dir of ["kernels", "initramfs"]) await symlink(join(sharedCacheDir, dir), join(home, "cache", dir));
  await copyFile(join(sharedCacheDir, "accel-probe.json"), join(home, "cache", "accel-probe.json")).catch(() => undefined);
  return { home, dispose: () => rm(home, { recursive: true, force: true, maxRetries: 3 }) };
}

/** PIDs of live processes whose command line mentions `needle` (e.g. a VM's run directory). */
export async function processesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(join("/proc", entry, "cmdline"), "utf8").catch(() => "");
    const argv0 = cmdline.split("\0")[0] ?? "";
    // Skip node processes (this test runner, pyro CLIs): we look for VMMs.
    if (cmdline.includes(needle) && !/(^|\/)node$/.test(argv0)) pids.push(Number(entry));
  }
  return pids;
}

/** Run directories currently present under a runtime dir. */
export async function runDirs(runtimeDir: string): Promise<string[]> {
  return (await readdir(runtimeDir).catch(() => [] as string[])).filter((d) => d.startsWith("run-")).map((d) => join(runtimeDir, d));
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Resolves once the guest agent in `runDir` is serving. A booted agent logs a line to the serial
 * console; a VM restored from a template logged it before it was saved, so there the sign is pyro's
 * connection to the agent socket (it connects once the restored guest runs).
 */
export async function agentReady(runDir: string): Promise<void> {
  const socket = join(runDir, "agent.sock");
  await waitFor("the guest agent to be ready", async () => {
    if ((await readFile(join(runDir, "console.log"), "utf8").catch(() => "")).includes("pyro-agent: ready")) return true;
    const [pid] = await processesMentioning(socket);
    const restored = pid !== undefined && (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0").includes("-incoming");
    return restored && (await readFile("/proc/net/unix", "utf8")).split("\n").some((line) => line.endsWith(` ${socket}`) && / 03 /.test(line))
      ? true
      : undefined;
  });
}
