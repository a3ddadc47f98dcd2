import { PyroError } from "../errors.js";

/**
 * How much an untrusted archive or download may put on disk. Generous (a real environment is a few
 * GiB and well under a million files) yet finite, so a hostile registry or image cannot fill the
 * disk or the inode table with an endless stream.
 */
export const MAX_UNPACKED_BYTES = 64 * 2 ** 30;
export const MAX_UNPACKED_ENTRIES = 2_000_000;

/** What one unpack (possibly many layers) may still write; each entry is charged before it is written. */
export class UnpackBudget {
  private bytes = 0;
  private entries = 0;

  constructor(
    private readonly maxBytes = MAX_UNPACKED_BYTES,
    private readonly maxEntries = MAX_UNPACKED_ENTRIES,
  ) {}

  /** Charges one entry of `bytes`; throws UNSAFE_ARCHIVE once the budget is exceeded. */
  charge(bytes: number): void {
    this.entries += 1;
    this.bytes += bytes;
    if (this.entries > this.maxEntries)
      throw new PyroError("UNSAFE_ARCHIVE", `it has more than ${this.maxEntries} entries, more than pyro unpacks; it was refused`);
    if (this.bytes > this.maxBytes)
      throw new PyroError("UNSAFE_ARCHIVE", `it unpacks to more than ${this.maxBytes} bytes, more than pyro allows; it was refused`);
  }
}
