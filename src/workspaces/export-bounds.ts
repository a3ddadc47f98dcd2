import { PyroError } from "../errors.js";
import type { ManifestEntry } from "./tree-manifest.js";

/** The bounds on what one export of a guest's tree writes on the host (its tree is the guest's to shape). */

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

/**
 * What an export may write of tar headers (workspace-limits' EXPORT_HEADER_BYTES): each entry's header repeats its
 * whole path, so headers are not bounded by the disk. Refused at the header that takes it past,
 * before it is written, so a refused export leaves no output (as with contents).
 */
export class HeaderBudget {
  private bytes = 0;

  constructor(
    private readonly label: string,
    private readonly maxBytes: number,
  ) {}

  /** Counts a header of `bytes` for the entry at `path`; throws past the bound. */
  add(bytes: number, path: string): void {
    this.bytes += bytes;
    if (this.bytes > this.maxBytes)
      throw new PyroError(
        "GUEST_OPERATION_FAILED",
        `${this.label} needs more than ${this.maxBytes} bytes of tar headers (each entry's header repeats its path and link target, and these are many or long); export a subdirectory`,
        { header_bytes_limit: this.maxBytes, path },
      );
  }
}
