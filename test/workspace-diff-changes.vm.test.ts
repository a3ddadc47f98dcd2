import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

/**
 * diff rebuilds the tree from what changed since the seed (tree.changes) rather than walking and
 * sending all of it; moves of whole directories are where that is subtle, so they are checked here
 * on a real guest against what a full comparison gives.
 */
describe("[vm] diff from the guest's changes: moved, replaced and linked directories", () => {
  let scratch: string;
  let id: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-diff-changes-"));
    const seed = join(scratch, "seed");
    for (const dir of ["a/b/c", "x/y", "keep/sub", "quiet/deep"]) await mkdir(join(seed, dir), { recursive: true });
    for (const file of ["a/b/c/f1", "a/b/f2", "x/y/f3", "keep/sub/old", "quiet/deep/f4", "top"]) await writeFile(join(seed, file), `${file}\n`);
    id = (await pyro.createWorkspace("debian:12", { seedPath: seed })).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("lists what a full comparison lists", TIMEOUT, async () => {
    assert.equal((await pyro.diffWorkspace(id, { summary: true })).changed, false);
    const changes = await pyro.execWorkspace(
      id,
      [
        "cd /workspace",
        // A directory moves away with an unchanged directory inside it.
        "mv a/b moved",
        // A changed directory (a file added) holding an unchanged one.
        "echo new > x/new",
        // A directory replaced by a new one of the same name.
        "rm -rf keep/sub && mkdir keep/sub && echo n > keep/sub/n",
        // A second name for a file, and a directory moved back where it was (nothing changes).
        "ln quiet/deep/f4 quiet/hard",
        "mv quiet/deep quiet/tmp && mv quiet/tmp quiet/deep",
      ].join(" && "),
    );
    assert.equal(changes.exit_code, 0, changes.stderr);
    const summary = await pyro.diffWorkspace(id, { summary: true });
    assert.deepEqual(
      summary.files.map((f) => `${f.status} ${f.path}`),
      [
        "deleted a/b/c/f1",
        "deleted a/b/f2",
        "deleted keep/sub/old",
        "added keep/sub/n",
        "added moved/c/f1",
        "added moved/f2",
        "modified quiet/deep/f4",
        "added quiet/hard",
        "added x/new",
      ].sort((p, q) => (p.split(" ")[1]! < q.split(" ")[1]! ? -1 : 1)),
    );
    // The patch reads both sides: the moved files' bytes come from their new place.
    const full = await pyro.diffWorkspace(id);
    assert.match(full.patch, /\+\+\+ b\/moved\/c\/f1\n@@ -0,0 \+1,1 @@\n\+a\/b\/c\/f1\n/);
  });

  it("takes the guest's view where the host's reader refuses the disk (a path longer than PATH_MAX)", TIMEOUT, async () => {
    // Legal for ext4 (each name is short; only the whole path is long), refused by the host's reader.
    const deep = await pyro.execWorkspace(
      id,
      // Two chains of 25 names of 99 bytes, each under PATH_MAX, the second moved to the bottom of the first.
      "cd /workspace && n=$(printf 'n%.0s' $(seq 1 99)) && p=deep && q=other && for i in $(seq 1 25); do p=$p/$n; q=$q/$n; done && " +
        "mkdir -p $p $q && echo bottom > $q/f && mv other $p/ && echo z > x/fallback",
    );
    assert.equal(deep.exit_code, 0, deep.stderr);
    const summary = await pyro.diffWorkspace(id, { summary: true });
    assert.ok(
      summary.files.some((f) => f.path === "x/fallback" && f.status === "added"),
      JSON.stringify(summary.files),
    );
    const full = await pyro.diffWorkspace(id);
    assert.match(full.patch, /\+\+\+ b\/x\/fallback\n@@ -0,0 \+1,1 @@\n\+z\n/);
  });
});
