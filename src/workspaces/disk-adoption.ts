import { link, mkdir, rm } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { PRIVATE_DIR_MODE } from "../storage/private-storage.js";
import { readQcow2Header } from "../storage/qcow2-backing-chain.js";

/**
 * Gives another workspace its own copy of a disk chain: every layer that lives in the source
 * workspace's directory is taken into the new one (qcow2 layers copied and re-pointed, raw layers —
 * the immutable seed image — hard-linked), so deleting, resetting or snapshot-deleting the source
 * never takes a layer from under the copy. Layers outside it (the environment image, a boot
 * template's disk) are shared as every workspace shares them.
 */
export class DiskAdoption {
  private readonly adopted = new Map<string, Promise<string>>();

  /**
   * @param place where a source file's copy goes in the new directory (a path inside `toDir`).
   */
  constructor(
    private readonly fromDir: string,
    private readonly place: (relativePath: string) => string,
  ) {}

  /** Copies the qcow2 image `image` to `dest` and adopts what it reads through. */
  async copyInto(image: string, dest: string): Promise<void> {
    const header = await readQcow2Header(image);
    if (!header) throw new PyroError("HOST_COMMAND_FAILED", `${image} is not a qcow2 overlay`);
    await mkdir(dirname(dest), { recursive: true, mode: PRIVATE_DIR_MODE });
    await rm(dest, { force: true });
    await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", image, dest], { privateFiles: true });
    if (header.backing === undefined) return;
    const backing = isAbsolute(header.backing) ? header.backing : resolve(dirname(image), header.backing);
    if (!this.owns(backing)) return;
    const adopted = await this.adopt(backing);
    const format = (await readQcow2Header(adopted)) ? "qcow2" : "raw";
    // Only the header's backing name changes (-u): the copy's data already sits on the same content.
    await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["rebase", "-u", "-f", "qcow2", "-b", adopted, "-F", format, dest], {
      privateFiles: true,
    });
  }

  /** A source file (layer, state, RAM) in the new directory: qcow2 copied, anything else hard-linked (immutable). */
  adopt(source: string): Promise<string> {
    let done = this.adopted.get(source);
    if (!done) {
      done = (async () => {
        const dest = this.place(relative(this.fromDir, source));
        if (await readQcow2Header(source)) {
          await this.copyInto(source, dest);
        } else {
          await mkdir(dirname(dest), { recursive: true, mode: PRIVATE_DIR_MODE });
          await rm(dest, { force: true });
          await link(source, dest);
        }
        return dest;
      })();
      this.adopted.set(source, done);
    }
    return done;
  }

  private owns(path: string): boolean {
    const rel = relative(this.fromDir, path);
    return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel);
  }
}

/** Joins a relative path under `dir`, refusing one that would leave it. */
export function under(dir: string, relativePath: string): string {
  const path = join(dir, relativePath);
  const rel = relative(dir, path);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) throw new PyroError("INVALID_ARGUMENT", `${relativePath} leaves ${dir}`);
  return path;
}
