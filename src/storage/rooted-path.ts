import { constants, type Stats } from "node:fs";
import { link, lstat, mkdir, open, readdir, readlink, rm, symlink, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";

/** How many symlinks one resolution may follow before it is called a loop (Linux's MAXSYMLINKS). */
export const MAX_SYMLINK_FOLLOWS = 40;
/** How many components one resolution may walk: long link targets times 40 follows must not stall an import. */
const MAX_RESOLVE_STEPS = 4096;

/** A path resolved inside a root: every directory on the way is a real directory inside it. */
export interface RootedPath {
  /** Host path of the result; no component of it is a symlink, except possibly the last (when not followed). */
  hostPath: string;
  /** The same path relative to the root, '' for the root itself. */
  relative: string;
  /** lstat of `hostPath`, undefined when nothing is there. */
  stats: Stats | undefined;
}

function components(path: string): string[] {
  return path.split("/").filter((c) => c !== "" && c !== ".");
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * A host directory that stands for the `/` of an untrusted tree (a container rootfs, an unpacked
 * archive). Every path is resolved inside it the way a container runtime resolves paths in its
 * rootfs: component by component with lstat, `..` clamped at the root, symlinks followed only by
 * re-resolving their targets inside the root (absolute targets start again at the root). The
 * host never follows a symlink of the tree itself, so no chain of links can lead outside.
 *
 * Resolution is sound because nothing else writes the tree while pyro works on it (the root is
 * pyro's own private directory); every operation here resolves afresh before it acts.
 */
export class RootedTree {
  constructor(readonly root: string) {}

  private fail(path: string, why: string): PyroError {
    return new PyroError("INVALID_ARGUMENT", `cannot resolve '${path}' inside the image: ${why}`, { root: this.root, path });
  }

  /**
   * Resolves `path` (relative or absolute: both mean "from the root"). Intermediate symlinks are
   * always followed inside the root; the last component only with `followFinal`. A missing
   * intermediate directory is created with `createParents`, else the rest resolves lexically
   * (nothing is there). An intermediate component that is not a directory is an error when
   * creating, and means "nothing there" when looking up.
   */
  async resolve(path: string, options: { followFinal: boolean; createParents?: boolean }): Promise<RootedPath> {
    if (path.includes("\0")) throw this.fail(path.replaceAll("\0", "\\0"), "it contains a NUL byte");
    const resolved: string[] = [];
    const pending = components(path);
    let follows = 0;
    let steps = 0;
    let missing = false;
    let finalStats: Stats | undefined = await lstat(this.root);
    while (pending.length) {
      if (++steps > MAX_RESOLVE_STEPS) throw this.fail(path, `it takes more than ${MAX_RESOLVE_STEPS} steps to resolve`);
      const part = pending.shift()!;
      if (part === "..") {
        // Until something is missing, `resolved` holds real directories only, so dropping the last one
        // is its true parent; at the root it stays. Once something is missing, nothing is touched anyway.
        resolved.pop();
        finalStats = missing ? undefined : await lstat(join(this.root, ...resolved));
        continue;
      }
      const isFinal = pending.length === 0;
      const hostPath = join(this.root, ...resolved, part);
      let stats = missing ? undefined : await lstatOrUndefined(hostPath);
      if (stats?.isSymbolicLink() && (!isFinal || options.followFinal)) {
        if (++follows > MAX_SYMLINK_FOLLOWS) throw this.fail(path, `more than ${MAX_SYMLINK_FOLLOWS} symlinks (a loop?)`);
        const target = await readlink(hostPath);
        if (target.startsWith("/")) resolved.length = 0;
        pending.unshift(...components(target));
        finalStats = await lstat(join(this.root, ...resolved));
        continue;
      }
      if (!isFinal) {
        if (!stats && options.createParents) {
          await mkdir(hostPath, { mode: 0o755 });
          stats = await lstat(hostPath);
        }
        if (stats && !stats.isDirectory()) {
          if (options.createParents) throw this.fail(path, `'${[...resolved, part].join("/")}' is not a directory`);
          stats = undefined; // a lookup through a non-directory finds nothing, as ENOTDIR would say
        }
        if (!stats) missing = true;
      }
      resolved.push(part);
      finalStats = stats;
    }
    return { hostPath: join(this.root, ...resolved), relative: resolved.join("/"), stats: finalStats };
  }

  /** Resolves the place where `path` itself lives (its parent followed, the entry not), refusing the root. */
  private async entry(path: string, createParents: boolean): Promise<RootedPath> {
    const parts = components(path);
    const last = parts[parts.length - 1];
    if (last === undefined || last === "..") throw this.fail(path, "it names the root or a parent, not an entry");
    return this.resolve(path, { followFinal: false, createParents });
  }

  /** What is at `path` (the last component not followed); undefined when nothing is. */
  async lstat(path: string): Promise<Stats | undefined> {
    return (await this.entry(path, false)).stats;
  }

  /** Host path of the regular file `path` names (symlinks followed inside the root), for reading. */
  async regularFile(path: string): Promise<string> {
    const file = await this.resolve(path, { followFinal: true });
    if (!file.stats?.isFile()) throw this.fail(path, file.stats ? "it is not a regular file" : "it does not exist");
    return file.hostPath;
  }

  /** Removes `path` itself: a symlink is unlinked (never its target), a directory removed with its contents. */
  async remove(path: string): Promise<boolean> {
    const at = await this.entry(path, false);
    if (!at.stats) return false;
    await removeHostEntry(at.hostPath, at.stats);
    return true;
  }

  /** Empties the directory `path` resolves to, when it is a real directory inside the root (else nothing). */
  async emptyDirectory(path: string): Promise<void> {
    const dir = await this.resolve(path, { followFinal: true });
    if (!dir.stats?.isDirectory()) return;
    for (const child of await readdir(dir.hostPath)) {
      const hostPath = join(dir.hostPath, child);
      const stats = await lstatOrUndefined(hostPath);
      if (stats) await removeHostEntry(hostPath, stats);
    }
  }

  /** Makes `path` a directory (parents created); anything else there is replaced, an existing directory kept. */
  async makeDirectory(path: string, mode = 0o755): Promise<string> {
    const at = await this.entry(path, true);
    if (at.stats?.isDirectory()) return at.hostPath;
    if (at.stats) await removeHostEntry(at.hostPath, at.stats);
    await mkdir(at.hostPath, { mode });
    return at.hostPath;
  }

  /** Creates `path` as a new, empty regular file, replacing whatever was there; never opens an existing file. */
  async createFile(path: string, mode = 0o644): Promise<{ handle: FileHandle; hostPath: string }> {
    const at = await this.replaceable(path);
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    return { handle: await open(at, flags, mode), hostPath: at };
  }

  /** Writes a small file at `path` (replacing whatever was there). */
  async writeFile(path: string, data: string | Buffer, mode = 0o644): Promise<void> {
    const { handle } = await this.createFile(path, mode);
    try {
      await handle.writeFile(data);
    } finally {
      await handle.close();
    }
  }

  /** Creates the symlink `path` → `target`; the target is stored verbatim (it means something only inside the tree). */
  async symlink(path: string, target: string): Promise<string> {
    const at = await this.replaceable(path);
    await symlink(target, at);
    return at;
  }

  /** Hardlinks `path` to the existing non-directory `target`, both resolved inside the root (a symlink target is linked itself). */
  async hardlink(path: string, target: string): Promise<string> {
    const source = await this.entry(target, false);
    if (!source.stats) throw this.fail(target, `it does not exist (hardlink '${path}')`);
    if (source.stats.isDirectory()) throw this.fail(target, `it is a directory (hardlink '${path}')`);
    const at = await this.entry(path, true);
    if (at.hostPath === source.hostPath) return at.hostPath;
    if (source.hostPath.startsWith(`${at.hostPath}/`)) throw this.fail(target, `it lies inside '${path}', which the hardlink replaces`);
    if (at.stats) await removeHostEntry(at.hostPath, at.stats);
    await link(source.hostPath, at.hostPath);
    return at.hostPath;
  }

  /** Host path where a new entry `path` can be created: parents made, whatever was there removed. */
  private async replaceable(path: string): Promise<string> {
    const at = await this.entry(path, true);
    if (at.stats) await removeHostEntry(at.hostPath, at.stats);
    return at.hostPath;
  }
}

/** Removes one entry whose host path has no symlink on the way; fs.rm never follows the symlinks inside a directory. */
async function removeHostEntry(hostPath: string, stats: Stats): Promise<void> {
  if (stats.isDirectory()) await rm(hostPath, { recursive: true, force: true });
  else await unlink(hostPath);
}
