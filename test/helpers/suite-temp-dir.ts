import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";

/**
 * A temp directory for the enclosing describe: made before its tests (and before the before
 * hooks registered after this call), removed after them. Returns its path, known once the suite runs.
 */
export function suiteTempDir(prefix: string): () => string {
  let dir: string | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (dir === undefined) throw new Error(`the ${prefix} temp dir is made when the suite starts`);
    return dir;
  };
}
