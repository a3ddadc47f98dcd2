import { Stats } from "node:fs";
import { lstat, open, readFile, stat } from "node:fs/promises";
import { posix } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, gunzipSync } from "node:zlib";
import { create, Parser, type ReadEntry } from "tar";
import { isPyroError, PyroError } from "../errors.js";

/** Largest (uncompressed) tree pyro moves into a workspace in one go. */
export const MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024;

export interface ArchiveSummary {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
}

const ALLOWED_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"]);
// pax/GNU metadata entries carry no files of their own.
const META_TYPES = new Set(["ExtendedHeader", "GlobalExtendedHeader", "NextFileHasLongPath", "NextFileHasLongLinkpath", "OldExtendedHeader"]);

function unsafe(entry: string, why: string): PyroError {
  return new PyroError("UNSAFE_ARCHIVE", `refusing archive entry '${entry}': ${why}; nothing was extracted`, { entry });
}

/** Normalises an archive path, rejecting absolute paths, '..' segments and NUL bytes. */
export function safeRelativePath(raw: string): string {
  if (raw.includes("\0")) throw unsafe(raw, "it contains a NUL byte");
  if (raw.startsWith("/")) throw unsafe(raw, "absolute paths are not allowed");
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw unsafe(raw, "'..' would escape the destination");
  return parts.join("/");
}

/**
 * Checks every entry of a tar before it goes near the guest: only files, directories, symlinks and
 * hardlinks; no path that escapes the destination directly, through a symlink it created, or by a
 * symlink/hardlink target. `strictSymlinks` also refuses symlinks pointing outside (for untrusted archives).
 */
export async function validateTar(tarBytes: Buffer, strictSymlinks: boolean): Promise<ArchiveSummary> {
  return validateTarStream(Readable.from([tarBytes]), strictSymlinks);
}

/** validateTar over a stream: entries are checked as they pass, their contents never held. */
export async function validateTarStream(input: Readable, strictSymlinks: boolean): Promise<ArchiveSummary> {
  const summary: ArchiveSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  const symlinks = new Set<string>();
  const seen = new Set<string>();
  let failure: PyroError | undefined;
  const parser = new Parser({ strict: true });
  const check = (entry: ReadEntry) => {
    if (META_TYPES.has(entry.type)) return;
    if (!ALLOWED_TYPES.has(entry.type)) throw unsafe(entry.path, `${entry.type} entries (devices, FIFOs…) are not allowed`);
    const path = safeRelativePath(entry.path);
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (symlinks.has(prefix)) throw unsafe(entry.path, `it would be written through the symlink '${prefix}'`);
    }
    if (entry.type === "SymbolicLink") {
      const target = entry.linkpath ?? "";
      const resolved = posix.normalize(posix.join(posix.dirname(path), target));
      if (strictSymlinks && (target.startsWith("/") || resolved === ".." || resolved.startsWith("../"))) {
        throw unsafe(entry.path, `its target '${target}' points outside the destination`);
      }
      symlinks.add(path);
      summary.symlinks++;
    } else if (entry.type === "Link") {
      const target = safeRelativePath(entry.linkpath ?? "");
      if (!seen.has(target)) throw unsafe(entry.path, `it hardlinks to '${entry.linkpath}', which is not an earlier file of the archive`);
      summary.files++;
    } else if (entry.type === "Directory") {
      summary.directories++;
    } else {
      summary.files++;
      summary.bytes += entry.size ?? 0;
    }
    seen.add(path);
  };
  parser.on("entry", (entry: ReadEntry) => {
    if (!failure) {
      try {
        check(entry);
      } catch (error) {
        failure = error as PyroError;
        input.destroy();
      }
    }
    entry.resume();
  });
  // Entries tar cannot represent faithfully (sparse files…) or oversized metadata: refuse, not skip.
  parser.on("ignoredEntry", (entry: ReadEntry) => {
    failure ??= unsafe(entry.path, `${entry.type} entries are not allowed`);
  });
  try {
    await pipeline(input, parser as unknown as NodeJS.WritableStream);
  } catch (error) {
    if (!failure) throw isPyroError(error) ? error : new PyroError("UNSAFE_ARCHIVE", `not a valid tar archive: ${(error as Error).message}`);
  }
  if (failure) throw failure;
  if (summary.bytes > MAX_ARCHIVE_BYTES) throw new PyroError("UNSAFE_ARCHIVE", `the archive holds more than ${MAX_ARCHIVE_BYTES} bytes`);
  return summary;
}

/**
 * A .tar/.tar.gz/.tgz on the host as a stream of tar bytes, decompressed with the same bound as
 * readArchive (no gzip bombs) but never held whole: a seed archive of any size costs a few chunks.
 */
export async function archiveStream(path: string): Promise<Readable> {
  const handle = await open(path, "r");
  const magic = Buffer.alloc(2);
  await handle.read(magic, 0, 2, 0);
  const raw = handle.createReadStream({ start: 0, highWaterMark: 1 << 20 });
  if (magic[0] !== 0x1f || magic[1] !== 0x8b) return raw;
  let produced = 0;
  const bounded = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      produced += chunk.length;
      if (produced > MAX_ARCHIVE_BYTES) done(new PyroError("UNSAFE_ARCHIVE", `${path} decompresses to more than ${MAX_ARCHIVE_BYTES} bytes`));
      else done(null, chunk);
    },
  });
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  const fail = (error: Error) => bounded.destroy(isPyroError(error) ? error : new PyroError("UNSAFE_ARCHIVE", `cannot decompress ${path}: ${error.message}`));
  raw.on("error", fail);
  gunzip.on("error", fail);
  return raw.pipe(gunzip).pipe(bounded);
}

/** Checks a host archive's name and kind (what prepareTree accepts besides directories). */
export async function checkArchivePath(source: string): Promise<void> {
  if (!(await lstat(source)).isFile() || !/\.(tar|tar\.gz|tgz)$/i.test(source)) {
    throw new PyroError("INVALID_ARGUMENT", `${source} must be a directory or a .tar, .tar.gz or .tgz archive`);
  }
}

/** Reads a .tar/.tar.gz/.tgz from the host, decompressing with a bound (no gzip bombs). */
async function readArchive(path: string): Promise<Buffer> {
  const raw = await readFile(path);
  if (raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return gunzipSync(raw, { maxOutputLength: MAX_ARCHIVE_BYTES });
    } catch (error) {
      throw new PyroError("UNSAFE_ARCHIVE", `cannot decompress ${path}: ${(error as Error).message}`);
    }
  }
  return raw;
}

/** Packs a host directory (files, dirs and symlinks as they are; sockets/FIFOs/devices skipped). */
async function packDirectory(dir: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const keep = (_path: string, st: Stats | ReadEntry) => !(st instanceof Stats) || st.isFile() || st.isDirectory() || st.isSymbolicLink();
  const stream = create({ cwd: dir, portable: true, follow: false, filter: keep }, ["."]);
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export interface PreparedTree {
  tar: Buffer;
  summary: ArchiveSummary;
  mode: "directory" | "tar_archive";
  origin: string;
}

/** Turns a host directory or archive into a validated tar ready for the guest. */
export async function prepareTree(source: string): Promise<PreparedTree> {
  let info;
  try {
    info = await stat(source);
  } catch {
    throw new PyroError("INVALID_ARGUMENT", `${source} does not exist`);
  }
  if (info.isDirectory()) {
    const tar = await packDirectory(source);
    if (tar.length > MAX_ARCHIVE_BYTES) throw new PyroError("INVALID_ARGUMENT", `${source} is larger than ${MAX_ARCHIVE_BYTES} bytes`);
    // Our own pack of the user's directory: symlinks may point anywhere (they resolve inside the guest).
    return { tar, summary: await validateTar(tar, false), mode: "directory", origin: source };
  }
  await checkArchivePath(source);
  const tar = await readArchive(source);
  return { tar, summary: await validateTar(tar, true), mode: "tar_archive", origin: source };
}
