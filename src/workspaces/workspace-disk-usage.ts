import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

/**
 * Host bytes actually allocated (not apparent sizes: overlays are sparse) by everything a workspace
 * keeps under its state directory: the live disk overlay, each snapshot's disk and memory image,
 * the baseline. Links are not followed, so nothing outside the workspace is counted.
 */
export async function allocatedBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir).catch(() => [] as string[]);
  for (const name of entries) {
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st) continue; // removed while we looked
    total += st.blocks * 512;
    if (st.isDirectory()) total += await allocatedBytes(path);
  }
  return total;
}
