import { Header, Pack, Parser, ReadEntry } from "tar";

/** Writes raw ustar archives, including entries no well-behaved tool would produce (for hostile-input tests). */
export interface RawTarEntry {
  path: string;
  type?: "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";
  content?: string | Buffer;
  linkpath?: string;
  mode?: number;
}

const TYPE_FLAG = { file: "0", hardlink: "1", symlink: "2", char: "3", block: "4", dir: "5", fifo: "6" } as const;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

export function makeTar(entries: RawTarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? "file";
    const body = type === "file" ? Buffer.from(e.content ?? "") : Buffer.alloc(0);
    const h = Buffer.alloc(512);
    h.write(e.path, 0, 100, "utf8");
    h.write(octal(e.mode ?? (type === "dir" ? 0o755 : 0o644), 8), 100);
    h.write(octal(0, 8), 108);
    h.write(octal(0, 8), 116);
    h.write(octal(body.length, 12), 124);
    h.write(octal(0, 12), 136);
    h.write("        ", 148);
    h.write(TYPE_FLAG[type], 156);
    if (e.linkpath) h.write(e.linkpath, 157, 100, "utf8");
    h.write("ustar\0", 257);
    h.write("00", 263);
    let sum = 0;
    for (const byte of h) sum += byte;
    h.write(octal(sum, 7) + " ", 148);
    blocks.push(h, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** Packs well-formed entries with node-tar (long names as pax), for tests that need real archives. */
export async function packTar(entries: { path: string; type: "File" | "SymbolicLink" | "Directory"; data?: Buffer; linkpath?: string }[]): Promise<Buffer> {
  const pack = new Pack({ portable: true });
  const chunks: Buffer[] = [];
  pack.on("data", (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    pack.on("end", () => resolve());
    pack.on("error", reject);
  });
  for (const e of entries) {
    const read = new ReadEntry(
      new Header({ path: e.path, type: e.type, mode: 0o644, size: e.data?.length ?? 0, ...(e.linkpath ? { linkpath: e.linkpath } : {}), mtime: new Date(0) }),
    );
    pack.add(read);
    if (e.data) read.write(e.data);
    read.end();
  }
  pack.end();
  await done;
  return Buffer.concat(chunks);
}

/** Every entry of an archive: name, link target and content. */
export async function tarEntries(tar: Buffer): Promise<{ path: string; linkpath?: string; data: Buffer }[]> {
  const out: { path: string; linkpath?: string; data: Buffer }[] = [];
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser();
    parser.on("entry", (entry: ReadEntry) => {
      const chunks: Buffer[] = [];
      entry.on("data", (c: Buffer) => chunks.push(c));
      entry.on("end", () => out.push({ path: entry.path, ...(entry.linkpath ? { linkpath: entry.linkpath } : {}), data: Buffer.concat(chunks) }));
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    parser.end(tar);
  });
  return out;
}
