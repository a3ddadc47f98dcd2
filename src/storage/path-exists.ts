import { stat } from "node:fs/promises";

/** Whether anything exists at `path` (following symlinks). */
export async function pathExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
