import { Header, Pax } from "tar";
import { TAR_BLOCK, type TarFields } from "./ustar-header.js";

/** A tar header (with a pax header first where ustar cannot hold the name, size or times). */
export function tarHeader(fields: TarFields): Buffer {
  const header = new Header(fields);
  const needsPax = header.encode();
  const pax = needsPax
    ? new Pax({ path: fields.path, ...(fields.linkpath ? { linkpath: fields.linkpath } : {}), size: fields.size, mtime: fields.mtime }).encode()
    : Buffer.alloc(0);
  return Buffer.concat([pax, header.block!]);
}

/** Zeros that pad a file body of `size` bytes to a whole block. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK);
}

/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * TAR_BLOCK);
