import { Header, Pax } from "tar";

/** tar's block: headers are one, file bodies are padded to a multiple of it. */
export const TAR_BLOCK = 512;

/** A tar entry's header fields, as pyro writes them (owner 0:0; the guest's agent ignores owners). */
export interface TarFields {
  path: string;
  type: "File" | "Directory" | "SymbolicLink" | "Link";
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  size: number;
  linkpath?: string;
}

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
