import { PyroError } from "../errors.js";
import type { ManifestEntry } from "./tree-manifest.js";

/**
 * What an export may write of file contents: no more than the disk holds. A guest can make a file
 * of any apparent size with no blocks behind it (`truncate -s 1T`): its tar would hold all of it.
 * A tree's contents (hardlinks counted once) cannot exceed its disk unless files are sparse, so the
 * export is refused at the file that takes it past the disk, before that file's bytes are written:
 * an export never writes more than its disk's size, and a refused one leaves no output.
 */
export class ContentBudget {
  private bytes = 0;
  private readonly linked = new Set<number>();

  constructor(
    private readonly maxBytes: number,
    private readonly label: string,
  ) {}

  /** Counts a walked entry's contents (files only; a hardlink's inode once); throws past the disk. */
  add(e: ManifestEntry): void {
    if (e.type !== "f" || (e.nlink > 1 && this.linked.has(e.ino))) return;
    if (e.nlink > 1) this.linked.add(e.ino);
    this.bytes += e.size;
    if (this.bytes > this.maxBytes)
      throw new PyroError(
        "GUEST_OPERATION_FAILED",
        `${this.label} holds more than its ${this.maxBytes}-byte disk can store in file contents, so some files are sparse ('${e.path}', ${e.size} bytes, takes it past); export a directory without them, or remove them`,
        { disk_bytes: this.maxBytes, path: e.path, size: e.size },
      );
  }
}
