import { link, lstat, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { PyroPaths } from "../paths.js";
import { processAlive } from "../process/process-alive.js";
import { ensurePrivateDir, makePrivateTempDir } from "../storage/private-storage.js";
import { buildSeedImage, diskBytes, type SeedImage } from "./seed-image.js";
import { encodeManifest } from "./tree-manifest.js";

/**
 * The /workspace image of a workspace created without a seed. Every such image of one size holds
 * the same thing (an empty ext4), so it is built once per disk size in the cache and hard-linked
 * into each workspace: mkfs on every create cost ~35 ms of a ~330 ms create. The image is read-only
 * (0400) and only ever a qcow2 backing, so sharing the inode shares nothing a guest can write;
 * deleting a workspace removes its link only. Copies share the filesystem's UUID and hash seed,
 * as restored copies of one template already share their root filesystem's.
 */

/** Bump when what buildSeedImage makes for an empty seed changes, so older cached images are not used. */
const EMPTY_IMAGE_LAYOUT = 1;

/** Where the shared empty image of this size lives (built or not); a workspace's seed.ext4 is this inode when it was linked. */
export function cachedImagePath(paths: PyroPaths, gib: number): string {
  return join(paths.cacheDir, "empty-seeds", `empty-v${EMPTY_IMAGE_LAYOUT}-${gib}g.ext4`);
}

/**
 * Gives the workspace its empty seed image at `image` (and an empty baseline manifest), linked from
 * the cache, which is built on first use. Where a link cannot be made (the state and cache on
 * different filesystems), the image is built in place as for a seeded create.
 */
export async function emptySeedImage(paths: PyroPaths, gib: number, image: string, manifestPath: string, scratchParent: string): Promise<SeedImage> {
  const cached = cachedImagePath(paths, gib);
  let linked = await linkCached(cached, image, gib);
  if (!linked) {
    await buildCached(paths, cached, gib);
    linked = await linkCached(cached, image, gib);
  }
  if (!linked) return buildSeedImage(undefined, undefined, gib, image, manifestPath, scratchParent);
  await writeFile(manifestPath, encodeManifest([]), { mode: 0o400 });
  // Everything in the image is at least as old as its last write (mkfs, then the lost+found removal).
  return { path: image, manifestPath, builtAtNs: (await stat(image, { bigint: true })).mtimeNs };
}

/** Links the cached image to `image` if it is there and is what pyro built; false if there is none or it cannot be linked. */
async function linkCached(cached: string, image: string, gib: number): Promise<boolean> {
  try {
    await link(cached, image);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EXDEV" || code === "EPERM" || code === "EMLINK") return false;
    throw error;
  }
  // link(2) does not follow a symlink at `cached`: checked on what was linked, not on the name.
  const st = await lstat(image);
  if (st.isFile() && st.uid === process.getuid?.() && (st.mode & 0o777) === 0o400 && st.size === diskBytes(gib)) return true;
  await rm(image, { force: true });
  await rm(cached, { force: true });
  return false;
}

/** Builds the empty image for this size under a private temp name, then moves it into place (atomic: concurrent builders each leave a whole image). */
async function buildCached(paths: PyroPaths, cached: string, gib: number): Promise<void> {
  const dir = await ensurePrivateDir(join(paths.cacheDir, "empty-seeds"));
  await removeDeadBuilds(dir);
  const scratch = await makePrivateTempDir(dir, `.build-${process.pid}-`);
  try {
    const built = await buildSeedImage(undefined, undefined, gib, join(scratch, "image.ext4"), join(scratch, "manifest"), scratch);
    await rename(built.path, cached);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** A build's scratch directory, named after the pyro process that builds in it. */
const BUILD_SCRATCH = /^\.build-(\d+)-/;

/** Removes what builds cut short (kill -9 mid-mkfs) left: scratch directories whose builder is gone. */
async function removeDeadBuilds(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const builder = BUILD_SCRATCH.exec(name)?.[1];
    if (builder && !processAlive(Number(builder))) await rm(join(dir, name), { recursive: true, force: true });
  }
}
