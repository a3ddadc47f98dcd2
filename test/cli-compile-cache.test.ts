import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, lstat, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CLI } from "./helpers/vm-fixtures.js";

function cli(home: string, args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env, PYRO_HOME: home };
  delete env.NODE_COMPILE_CACHE;
  delete env.NODE_DISABLE_COMPILE_CACHE;
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env, timeout: 60_000 });
}

describe("the CLI's compiled-code cache", () => {
  const homes: string[] = [];
  after(async () => {
    for (const h of homes) await rm(h, { recursive: true, force: true });
  });
  const home = async () => {
    const h = await mkdtemp(join(tmpdir(), "pyro-ncc-"));
    homes.push(h);
    return h;
  };

  it("lives in pyro's private cache directory and fills on the first run", async () => {
    const h = await home();
    const r = cli(h, ["workspace", "list", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const dir = join(h, "cache", "node-compile-cache");
    const st = await lstat(dir);
    assert.ok(st.isDirectory());
    assert.equal(st.mode & 0o777, 0o700);
    assert.ok((await readdir(dir, { recursive: true })).length > 0, "compiled modules were cached");
    assert.equal(cli(h, ["workspace", "list", "--json"]).status, 0, "a second run uses it");
  });

  it("is not used where other users could write it: the CLI runs, and writes nothing there", async () => {
    const h = await home();
    const dir = join(h, "cache", "node-compile-cache");
    await mkdir(dir, { recursive: true });
    await chmod(dir, 0o777);
    const r = cli(h, ["workspace", "list", "--json"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(await readdir(dir), []);
  });
});
