/**
 * Loaded into every test file's process (`node --test --import …/isolated-home.js`): gives the file
 * its own PYRO_HOME — workspace state, runtime dirs, locks — so no test sees what another file
 * left behind or counts another file's workspaces. The read-only build products (kernels,
 * initramfs images, environments, boot templates, the accelerator probe) are shared with the
 * suite's cache through symlinks, so nothing is rebuilt per file.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePaths } from "../../src/paths.js";

/** Where the suite's shared cache lives (the environment before this module ran). */
export const SHARED_CACHE_ENV = "PYRO_TEST_SHARED_CACHE";

/** The shared, content-keyed build products a test may read but never needs to rebuild. */
const SHARED_CACHE_ENTRIES = ["kernels", "initramfs", "environments", "templates"];

function isolate(): void {
  if (process.env[SHARED_CACHE_ENV]) return; // already isolated (a nested process inherits the home)
  const sharedCache = resolvePaths().cacheDir;
  process.env[SHARED_CACHE_ENV] = sharedCache;
  // Short base: unix socket paths under the runtime dir must stay below 107 bytes.
  const home = mkdtempSync(join(tmpdir(), "pyro-t-"));
  mkdirSync(join(home, "cache"), { recursive: true, mode: 0o700 });
  for (const entry of SHARED_CACHE_ENTRIES) {
    mkdirSync(join(sharedCache, entry), { recursive: true });
    symlinkSync(join(sharedCache, entry), join(home, "cache", entry));
  }
  try {
    copyFileSync(join(sharedCache, "accel-probe.json"), join(home, "cache", "accel-probe.json"));
  } catch {
    // No probe yet: the first VM of this file probes once.
  }
  process.env.PYRO_HOME = home;
  delete process.env.PYRO_RUNTIME_DIR;
  let cleaned = false;
  const cleanUp = () => {
    if (cleaned) return;
    cleaned = true;
    // Workspace VMs outlive the processes that start them; a test that failed midway must not leave
    // its VMs running (with their disks deleted under them) after its home is gone.
    killProcessesMentioning(home);
    rmSync(home, { recursive: true, force: true, maxRetries: 3 });
  };
  process.on("exit", cleanUp);
  // A signal ends the process without 'exit' handlers: a stopped run (Ctrl-C, timeout, kill) would
  // leave this file's VMs running. Clean up, then end as the signal would have (128 + its number).
  for (const [signal, number] of [
    ["SIGINT", 2],
    ["SIGTERM", 15],
    ["SIGHUP", 1],
  ] as const) {
    process.once(signal, () => {
      cleanUp();
      process.exit(128 + number);
    });
  }
}

/** SIGKILLs every other process whose command line names `needle` (synchronous: runs at exit). */
function killProcessesMentioning(needle: string): void {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
    } catch {
      continue; // gone already
    }
    if (!cmdline.includes(needle)) continue;
    try {
      process.kill(Number(entry), "SIGKILL");
    } catch {
      // exited meanwhile
    }
  }
}

isolate();
