import { createReadStream } from "node:fs";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { Parser, type ReadEntry } from "tar";
import { PyroError } from "../errors.js";
import type { RootedTree } from "../storage/rooted-path.js";
import { extractTarInRoot } from "../storage/rooted-tar-extract.js";
import type { UnpackBudget } from "../storage/unpack-budget.js";

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

/** One layer of a container image on the host, as a (possibly compressed) tar. */
export interface LayerFile {
  path: string;
  /** gzip, zstd or none (plain tar). */
  compression: "gzip" | "zstd" | "none";
}

/** The compression of a layer, from its media type or its first bytes. */
export function compressionOf(mediaType: string, firstBytes?: Buffer): LayerFile["compression"] {
  if (mediaType.includes("zstd") || (firstBytes && firstBytes.length >= 4 && firstBytes.readUInt32LE(0) === 0xfd2fb528)) return "zstd";
  if (mediaType.includes("gzip") || mediaType.endsWith(".tar.gzip") || (firstBytes && firstBytes[0] === 0x1f && firstBytes[1] === 0x8b)) return "gzip";
  return "none";
}

/** The layer's tar bytes, decompressed. */
export function layerTar(layer: LayerFile): Readable {
  const file = createReadStream(layer.path);
  if (layer.compression === "none") return file;
  let decompress: NodeJS.ReadWriteStream;
  if (layer.compression === "gzip") decompress = zlib.createGunzip();
  else {
    const make = (zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream }).createZstdDecompress;
    if (!make) throw new PyroError("INVALID_ARGUMENT", "this image has zstd layers; Node.js 23.8+ is needed to read them");
    decompress = make();
  }
  // Errors of the file reach whoever reads the result; destroying the result closes the file.
  file.on("error", (error) => (decompress as unknown as Readable).destroy(error));
  (decompress as unknown as Readable).on("close", () => file.destroy());
  return file.pipe(decompress) as unknown as Readable;
}

interface Whiteouts {
  /** Paths the layer deletes from the layers below. */
  deletions: string[];
  /** Directories whose lower contents the layer hides. */
  opaque: string[];
}

async function readWhiteouts(layer: LayerFile, label: string): Promise<Whiteouts> {
  const found: Whiteouts = { deletions: [], opaque: [] };
  const parser = new Parser({
    strict: true,
    onReadEntry: (entry: ReadEntry) => {
      const base = posix.basename(entry.path);
      const dir = posix.dirname(entry.path);
      if (base === OPAQUE) found.opaque.push(dir);
      else if (base.startsWith(WHITEOUT)) {
        const name = base.slice(WHITEOUT.length);
        // '.wh.', '.wh..' and '.wh...' name no sibling; they hide nothing.
        if (name !== "" && name !== "." && name !== "..") found.deletions.push(posix.join(dir, name));
      }
      entry.resume();
    },
  });
  try {
    await pipeline(layerTar(layer), parser as unknown as NodeJS.WritableStream);
  } catch (error) {
    if (error instanceof PyroError) throw error;
    throw new PyroError("UNSAFE_ARCHIVE", `${label} is not a valid tar archive: ${(error as Error).message}`, {}, { cause: error });
  }
  return found;
}

/**
 * Applies one layer on top of the rootfs `tree`: first its whiteouts (files deleted, directories
 * made opaque, against the layers below), then its content. Every path, the whiteouts' included,
 * is resolved inside the tree (see RootedTree), so no symlink an image made can lead outside it.
 */
export async function applyLayer(tree: RootedTree, layer: LayerFile, label: string, budget?: UnpackBudget): Promise<void> {
  const { deletions, opaque } = await readWhiteouts(layer, label);
  try {
    for (const dir of opaque) await tree.emptyDirectory(dir);
    for (const path of deletions) await tree.remove(path);
  } catch (error) {
    if (error instanceof PyroError) throw new PyroError(error.code, `${label}, whiteouts: ${error.message}`, error.details, { cause: error });
    throw error;
  }
  await extractTarInRoot(tree, layerTar(layer), {
    label,
    ...(budget ? { budget } : {}),
    preserveOwner: true,
    // Whiteout markers are instructions, not files.
    skip: (path) => posix.basename(path).startsWith(WHITEOUT),
  });
}
