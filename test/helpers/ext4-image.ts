import { type Ext4Inode, Ext4Reader } from "../../src/storage/ext4-reader.js";
import { type DiskReader, openDisk } from "../../src/storage/qcow2-reader.js";

/** Opens the ext4 filesystem on `image` (raw, or the top of a qcow2 chain) for `use`, and closes the disk however `use` ends. */
export function withExt4<T>(image: string, use: (fs: Ext4Reader, disk: DiskReader) => T): T {
  const disk = openDisk(image);
  try {
    return use(Ext4Reader.open(disk), disk);
  } finally {
    disk.close();
  }
}

/** One buffer for every piece: the reader fills it in place, as export fills its output. */
const piece = Buffer.allocUnsafe(1 << 20);

/**
 * A file's bytes read through `contentReader` (the reader export streams with), in pieces of at
 * most 1 MiB; each piece is a view of one reused buffer, valid until the next is asked for.
 */
export function* fileContents(fs: Ext4Reader, inode: Ext4Inode): Generator<Buffer> {
  const read = fs.contentReader(inode);
  for (let filled = read(piece); filled > 0; filled = read(piece)) yield piece.subarray(0, filled);
}
