import { link, mkdir, readdir, rename, rm } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { PRIVATE_DIR_MODE } from "../storage/private-storage.js";
import { readQcow2Header } from "../storage/qcow2-backing-chain.js";

/**
 * Gives other workspaces their own copy of a disk chain: every layer that lives in the source
 * workspace's directory is taken into a staging tree laid out as a workspace directory (qcow2
 * layers copied, raw layers — the immutable seed image — hard-linked), whose qcow2 headers name
 * their backing files by *relative* paths. Any number of workspaces then take the whole tree by
 * hard links (`linkTree`): the same bytes, no copy per workspace, and each link resolves inside
 * its own directory, so deleting, resetting or snapshot-deleting the source (or a sibling) never
 * takes a layer from under a copy. Layers outside the source directory (the environment image, a
 * boot template's disk) are shared as every workspace shares them.
 */
export class DiskAdoption {
  private readonly adopted = new Map<string, Promise<string>>();

  /**
   * @param place where a source file's copy goes in the staging tree (a path inside it).
   */
  constructor(
    private readonly fromDir: string,
    private readonly place: (relativePath: string) => string,
  ) {}

  /**
   * Puts the qcow2 image `image` at `dest` (moved when `move`: a private copy made for this, else
   * copied) and adopts what it reads through.
   */
  async take(image: string, dest: string, move = false): Promise<void> {
    const header = await readQcow2Header(image);
    if (!header) throw new PyroError("HOST_COMMAND_FAILED", `${image} is not a qcow2 overlay`);
    await mkdir(dirname(dest), { recursive: true, mode: PRIVATE_DIR_MODE });
    await rm(dest, { force: true });
    if (move) await rename(image, dest);
    else await runHostCommand(requireExecutable("cp", "coreutils"), ["--sparse=always", image, dest], { privateFiles: true });
    if (header.backing === undefined) return;
    const backing = isAbsolute(header.backing) ? header.backing : resolve(dirname(image), header.backing);
    let name: string;
    if (this.owns(backing)) {
      // Relative: the same header is right wherever the tree is linked.
      name = relative(dirname(dest), await this.adopt(backing));
    } else if (!isAbsolute(header.backing)) {
      name = backing; // a relative name would now resolve from the new place
    } else {
      return;
    }
    const format = (await readQcow2Header(backing)) ? "qcow2" : "raw";
    // Only the header's backing name changes (-u): the data already sits on the same content.
    await runHostCommand(requireExecutable("qemu-img", "qemu-utils"), ["rebase", "-u", "-f", "qcow2", "-b", name, "-F", format, dest], {
      privateFiles: true,
    });
  }

  /** A source file (layer, state, RAM) in the staging tree: qcow2 copied, anything else hard-linked (immutable). */
  adopt(source: string): Promise<string> {
    let done = this.adopted.get(source);
    if (!done) {
      done = (async () => {
        const dest = this.place(relative(this.fromDir, source));
        if (await readQcow2Header(source)) {
          await this.take(source, dest);
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

/** Hard-links every file of the tree `from` into `to` at the same relative paths (directories made private). */
export async function linkTree(from: string, to: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = join(from, entry.name);
    const dest = join(to, entry.name);
    if (entry.isDirectory()) {
      await mkdir(dest, { recursive: true, mode: PRIVATE_DIR_MODE });
      await linkTree(source, dest);
    } else if (entry.isFile()) {
      await link(source, dest);
    }
  }
}

/** Joins a relative path under `dir`, refusing one that would leave it. */
export function under(dir: string, relativePath: string): string {
  const path = join(dir, relativePath);
  const rel = relative(dir, path);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) throw new PyroError("INVALID_ARGUMENT", `${relativePath} leaves ${dir}`);
  return path;
}
