import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { PyroPaths } from "../../src/paths.js";
import { forkMemoryDir } from "../../src/workspaces/fork-memory.js";

/**
 * The fork RAM files of a home whose names start with `prefix` (default: every one), as paths. The
 * home's fork directory exists only while it holds a file, so a missing one means none.
 */
export async function forkMemoryFiles(paths: PyroPaths, prefix = "fork-"): Promise<string[]> {
  const dir = await forkMemoryDir(paths);
  assert.ok(dir, "this host keeps fork RAM in files");
  const names = await readdir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return [] as string[];
    throw error;
  });
  return names.filter((n) => n.startsWith(prefix)).map((n) => join(dir, n));
}
