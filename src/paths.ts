import { createHash } from "node:crypto";
import { homedir, tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

/** Where pyro keeps things. PYRO_HOME puts everything under one directory (tests, CI, sandboxes). */
export interface PyroPaths {
  /** Rebuildable artifacts: kernels, initramfs images, environments. */
  readonly cacheDir: string;
  /** Durable state: workspace records and disks. */
  readonly stateDir: string;
  /**
   * Short-lived sockets and per-VM scratch; kept short because unix socket paths are capped at 107 bytes.
   * Without XDG_RUNTIME_DIR it is $TMPDIR/pyro-<uid>, a name any local user can create first: every
   * user of it goes through storage/private-storage.ts, which refuses one that is not privately ours.
   */
  readonly runtimeDir: string;
}

/** Room for "/run-XXXXXX/agent.sock" and friends within a unix socket path (107 bytes). */
const MAX_RUNTIME_DIR_LEN = 70;

export function resolvePaths(env: NodeJS.ProcessEnv = process.env): PyroPaths {
  const pyroHome = env.PYRO_HOME ? resolve(env.PYRO_HOME) : undefined;
  const home = homedir();
  const cacheDir = pyroHome ? join(pyroHome, "cache") : join(env.XDG_CACHE_HOME || join(home, ".cache"), "pyro-mcp");
  const stateDir = pyroHome ? join(pyroHome, "state") : join(env.XDG_STATE_HOME || join(home, ".local", "state"), "pyro-mcp");
  const uid = process.getuid?.() ?? 0;
  let runtimeDir: string;
  if (env.PYRO_RUNTIME_DIR) runtimeDir = resolve(env.PYRO_RUNTIME_DIR);
  else if (pyroHome) {
    runtimeDir = join(pyroHome, "run");
    // Keep socket paths under the 107-byte limit even for a deep PYRO_HOME.
    if (runtimeDir.length > MAX_RUNTIME_DIR_LEN) runtimeDir = join(tmpdir(), `pyro-${uid}-${createHash("sha256").update(pyroHome).digest("hex").slice(0, 12)}`);
  } else runtimeDir = env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, "pyro") : join(tmpdir(), `pyro-${uid}`);
  return { cacheDir, stateDir, runtimeDir };
}

/** Root of the installed package (holds guest/ and scripts/), found from this compiled file. */
export function packageRoot(): string {
  // dist/src/paths.js → package root is two levels above dist/src.
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
}
