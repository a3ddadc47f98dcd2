import { chmod, mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { PyroError, asPyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import type { EnvironmentSpec } from "./catalog.js";

/** Apparent size of every base image; sparse, so only the real tree (~300 MB) takes disk space. */
export const IMAGE_SIZE_BYTES = 4 * 1024 ** 3;

/** Runs inside mmdebstrap (`$1` is the new root): the bits of a pyro guest no Debian package provides. */
const CUSTOMIZE_HOOKS = [
  'mkdir -p "$1/workspace"',
  'echo pyro > "$1/etc/hostname"',
  'printf "127.0.0.1 localhost pyro\\n::1 localhost\\n" > "$1/etc/hosts"',
  // The package lists are stale the day after the build and weigh ~40 MB: guests run apt-get update first.
  'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log',
];

const DPKG_OPTIONS = [
  "path-exclude=/usr/share/man/*",
  "path-exclude=/usr/share/doc/*",
  "path-include=/usr/share/doc/*/copyright",
  "path-exclude=/usr/share/locale/*",
  "path-exclude=/usr/share/info/*",
];

export type BuildProgress = (message: string) => void;

/**
 * Builds `spec` from Debian's mirror with mmdebstrap into a directory, then packs it into an ext4
 * image with `mkfs.ext4 -d`: nothing is ever mounted on the host (runtime-facts 2a, 2d, G5).
 */
export async function buildRootfsImage(spec: EnvironmentSpec, workDir: string, imagePath: string, progress: BuildProgress): Promise<void> {
  const mmdebstrap = requireExecutable("mmdebstrap", "mmdebstrap");
  const mkfs = requireExecutable("mkfs.ext4", "e2fsprogs");
  const rootDir = join(workDir, "rootfs");
  await rm(workDir, { recursive: true, force: true });
  await mkdir(workDir, { recursive: true });
  const isRoot = process.getuid?.() === 0;
  const args = [
    `--mode=${isRoot ? "root" : "unshare"}`,
    "--variant=minbase",
    "--format=directory",
    "--quiet",
    ...(spec.packages.length ? [`--include=${spec.packages.join(",")}`] : []),
    ...DPKG_OPTIONS.map((o) => `--dpkgopt=${o}`),
    ...CUSTOMIZE_HOOKS.map((h) => `--customize-hook=${h}`),
    spec.suite,
    rootDir,
    ...(process.env.PYRO_DEBIAN_MIRROR ? [process.env.PYRO_DEBIAN_MIRROR] : []),
  ];
  progress(`[pull] phase=bootstrap environment=${spec.name} packages=${spec.packages.length ? spec.packages.join(",") : "minbase"}`);
  try {
    await runHostCommand(mmdebstrap, args, { timeoutMs: 1_800_000, env: { ...process.env, TMPDIR: workDir } });
  } catch (error) {
    const hint = isRoot ? "" : " (rootless builds need /etc/subuid ranges: runtime-facts 2c; run as root or via scripts/setup.sh)";
    throw asPyroError(error, "ENVIRONMENT_BUILD_FAILED", `building ${spec.name} with mmdebstrap failed${hint}`);
  }
  progress(`[pull] phase=image environment=${spec.name}`);
  await rm(imagePath, { force: true });
  try {
    // lazy_itable_init=0: otherwise every guest's kernel would zero inode tables into its overlay.
    await runHostCommand(
      mkfs,
      ["-q", "-F", "-L", "pyro-root", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", rootDir, imagePath, `${IMAGE_SIZE_BYTES / 1024}k`],
      { timeoutMs: 600_000 },
    );
  } catch (error) {
    throw asPyroError(error, "ENVIRONMENT_BUILD_FAILED", `packing ${spec.name} into ext4 failed`);
  }
  // The base is shared by every VM; only per-VM qcow2 overlays are ever written (runtime-facts G4).
  await chmod(imagePath, 0o444);
  const size = (await stat(imagePath)).size;
  if (size !== IMAGE_SIZE_BYTES) throw new PyroError("ENVIRONMENT_BUILD_FAILED", `image ${imagePath} has size ${size}, expected ${IMAGE_SIZE_BYTES}`);
  await rm(rootDir, { recursive: true, force: true });
}
