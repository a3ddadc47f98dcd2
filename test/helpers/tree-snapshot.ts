import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";

/** Everything observable about a host tree, entry by entry: kind, mode, link count, owner, mtime, content or link target. */
export async function snapshotTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const visit = async (path: string, rel: string): Promise<void> => {
    let st;
    try {
      st = await lstat(path);
    } catch {
      out[rel] = "missing";
      return;
    }
    const head = `mode=${st.mode.toString(8)} nlink=${st.nlink} uid=${st.uid} mtime=${st.mtimeMs}`;
    if (st.isSymbolicLink()) out[rel] = `${head} -> ${await readlink(path)}`;
    else if (st.isFile()) out[rel] = `${head} ${(await readFile(path)).toString("base64")}`;
    else if (st.isDirectory()) {
      out[rel] = `${head} dir`;
      for (const child of (await readdir(path)).sort()) await visit(join(path, child), rel ? `${rel}/${child}` : child);
    } else out[rel] = `${head} other`;
  };
  await visit(dir, "");
  return out;
}
