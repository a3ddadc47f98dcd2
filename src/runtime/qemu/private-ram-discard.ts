import { stat } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../../errors.js";
import { isFile } from "../../storage/path-exists.js";
import { packageRoot } from "../../paths.js";
import { findCargo, runHostCommand } from "../../process/host-command.js";

/**
 * The library QEMU is started with (LD_PRELOAD) when its guest RAM is a file mapped copy-on-write
 * and the guest reports freed pages: it turns QEMU's punch of that file into a no-op, so only QEMU's
 * own madvise(MADV_DONTNEED) runs and the freed pages leave this VM without zeroing the template
 * under every other VM (host/private-ram-discard/src/lib.rs says why no QEMU option does this).
 */

export function privateRamDiscardSourceDir(): string {
  return join(packageRoot(), "host", "private-ram-discard");
}

/** Where `cargo build --release` leaves the library. */
export function builtPrivateRamDiscardPath(): string {
  return join(privateRamDiscardSourceDir(), "target", "release", "libpyro_private_ram_discard.so");
}

/** The built library, if it is there. */
export async function locatePrivateRamDiscard(): Promise<string | undefined> {
  const built = builtPrivateRamDiscardPath();
  return (await isFile(built)) ? built : undefined;
}

/**
 * The library, building it with cargo when it is missing and cargo is here; undefined when it can't
 * be had (copy-on-write VMs then go without free page reporting, and doctor says so).
 */
export async function ensurePrivateRamDiscard(onProgress?: (message: string) => void): Promise<string | undefined> {
  const found = await locatePrivateRamDiscard();
  if (found) return found;
  const cargo = findCargo();
  if (!cargo || !(await isFile(cargo))) return undefined;
  onProgress?.("[private-ram-discard] phase=build");
  try {
    await runHostCommand(cargo, ["build", "--release", "--quiet"], { cwd: privateRamDiscardSourceDir(), timeoutMs: 600_000 });
  } catch {
    return undefined;
  }
  return locatePrivateRamDiscard();
}

/**
 * The environment that makes QEMU skip punching `memoryFile`, named by device and inode (taken
 * here, just before the launch, from pyro's own private memory directory): every other file QEMU
 * discards in (disk images) is punched as before.
 */
export async function privateRamDiscardEnv(library: string | undefined, memoryFile: string): Promise<Record<string, string>> {
  if (!library)
    throw new PyroError(
      "INVALID_ARGUMENT",
      `free page reporting on a copy-on-write RAM file needs pyro's private-ram-discard library (QEMU alone would punch the freed pages out of ${memoryFile}, under every VM mapping it); run scripts/setup.sh`,
    );
  const file = await stat(memoryFile, { bigint: true });
  return { LD_PRELOAD: library, PYRO_PRIVATE_RAM: `${file.dev}:${file.ino}` };
}
