import { homedir, tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

/** Where pyro keeps things. PYRO_HOME puts everything under one directory (tests, CI, sandboxes). */
export interface PyroPaths {
  /** Rebuildable artifacts: kernels, initramfs images, environments. */
  readonly cacheDir: string;
  /** Durable state: workspace records and disks. */
  readonly stateDir: string;
  /** Short-lived sockets and per-VM scratch; kept short because unix socket paths are capped at 107 bytes. */
  readonly runtimeDir: string;
}

export function resolvePaths(env: NodeJS.ProcessEnv = process.env): PyroPaths {
  const pyroHome = env.PYRO_HOME ? resolve(env.PYRO_HOME) : undefined;
  const home = homedir();
  const cacheDir = pyroHome ? join(pyroHome, "cache") : join(env.XDG_CACHE_HOME || join(home, ".cache"), "pyro-mcp");
  const stateDir = pyroHome ? join(pyroHome, "state") : join(env.XDG_STATE_HOME || join(home, ".local", "state"), "pyro-mcp");
  const uid = process.getuid?.() ?? 0;
  const runtimeDir = env.PYRO_RUNTIME_DIR
    ? resolve(env.PYRO_RUNTIME_DIR)
    : env.XDG_RUNTIME_DIR
      ? join(env.XDG_RUNTIME_DIR, "pyro")
      : join(tmpdir(), `pyro-${uid}`);
  return { cacheDir, stateDir, runtimeDir };
}

/** Root of the installed package (holds guest/ and scripts/), found from this compiled file. */
export function packageRoot(): string {
  // dist/src/paths.js → package root is two levels above dist/src.
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
}
