/**
 * tarHeader's common case written directly: an ASCII name and link target of at most 100 bytes,
 * a size and time that fit 11 octal digits. Byte for byte what the tar library encodes for them
 * (a test holds it to that), at a fraction of the cost: an export writes one per entry, and
 * through the library 10k headers took ~150 ms of CPU and as much again in garbage collection.
 */

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

const TYPE_FLAGS: Record<TarFields["type"], number> = { File: 0x30, Link: 0x31, SymbolicLink: 0x32, Directory: 0x35 };
const MAX_OCTAL_11 = 8 ** 11;
const NAME_BYTES = 100;

/**
 * A numeric field as the tar library writes it: octal padded to `length - 2` digits and " \0", or
 * `length - 1` digits and "\0" when that is needed. Returns the sum of the bytes written (for the checksum).
 */
function octal(target: Buffer, at: number, value: number, length: number): number {
  let digits = 1;
  for (let v = value; v >= 8; v = Math.floor(v / 8)) digits++;
  const width = Math.max(digits, length - 2);
  let sum = 0;
  for (let i = width - 1, v = value; i >= 0; i--, v = Math.floor(v / 8)) {
    const byte = 0x30 + (v % 8);
    target[at + i] = byte;
    sum += byte;
  }
  if (width === length - 2) {
    target[at + width] = 0x20;
    sum += 0x20;
  }
  return sum; // the trailing NUL adds nothing
}

/** Writes an ASCII name of at most 100 bytes; returns its byte sum, or -1 where it is not one. */
function shortAscii(target: Buffer, at: number, text: string): number {
  if (text.length > NAME_BYTES) return -1;
  let sum = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0x7f || code === 0) return -1;
    target[at + i] = code;
    sum += code;
  }
  return sum;
}

/** The header's constant part: magic and version, and the device fields, with their byte sum. */
const TEMPLATE = Buffer.alloc(TAR_BLOCK);
TEMPLATE.write("ustar\u000000", 257, "latin1");
const TEMPLATE_SUM = TEMPLATE.reduce((a, b) => a + b, 0) + octal(TEMPLATE, 329, 0, 8) + octal(TEMPLATE, 337, 0, 8) + 8 * 0x20; // the checksum field counts as spaces

/**
 * Writes the 512-byte ustar header of `fields` into `target` at `at` (an export's output buffer: no
 * buffer per entry); false where tarHeader's pax path is needed (what was written there is junk).
 */
export function writeUstarHeader(target: Buffer, at: number, fields: TarFields): boolean {
  const seconds = Math.floor(fields.mtime.getTime() / 1000);
  if (!(fields.size >= 0 && fields.size < MAX_OCTAL_11) || !(seconds >= 0 && seconds < MAX_OCTAL_11)) return false;
  if (fields.mode > 0o7777777 || fields.uid > 0o7777777 || fields.gid > 0o7777777) return false;
  if (target.length - at < TAR_BLOCK) throw new RangeError("no room for a tar header");
  TEMPLATE.copy(target, at);
  const nameSum = shortAscii(target, at, fields.path);
  const linkSum = fields.linkpath ? shortAscii(target, at + 157, fields.linkpath) : 0;
  if (nameSum < 0 || linkSum < 0) return false;
  const type = TYPE_FLAGS[fields.type];
  target[at + 156] = type;
  let sum = TEMPLATE_SUM + nameSum + linkSum + type;
  sum += octal(target, at + 100, fields.mode, 8);
  sum += octal(target, at + 108, fields.uid, 8);
  sum += octal(target, at + 116, fields.gid, 8);
  sum += octal(target, at + 124, fields.size, 12);
  sum += octal(target, at + 136, seconds, 12);
  octal(target, at + 148, sum, 8);
  return true;
}
