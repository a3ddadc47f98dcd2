import assert from "node:assert/strict";
import { lstat, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { assertOutputFree, publishNewFile } from "../src/storage/new-host-file.js";

describe("writing an export's output: a new file, never through or over what is there", () => {
  const dirs: string[] = [];
  async function scratch(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "pyro-out-"));
    dirs.push(dir);
    return dir;
  }
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const refused = (e: unknown) => isPyroError(e, "INVALID_ARGUMENT") && /already exists; choose another --output/.test((e as Error).message);

  it("creates the file, leaving no scratch behind", async () => {
    const dir = await scratch();
    await publishNewFile(join(dir, "out.bin"), (tmp) => writeFile(tmp, "data", { flag: "wx" }));
    assert.equal(await readFile(join(dir, "out.bin"), "utf8"), "data");
    assert.deepEqual(await readdir(dir), ["out.bin"]);
  });

  it("refuses an output that became a symlink to a canary while the content was being read, and leaves the canary alone", async () => {
    const dir = await scratch();
    const canary = join(dir, "canary");
    await writeFile(canary, "precious");
    const output = join(dir, "out.bin");
    await assertOutputFree(output);
    // The slow read (the guest decides how long it takes): meanwhile a local user plants a symlink.
    const publish = publishNewFile(output, async (tmp) => {
      await symlink(canary, output);
      await writeFile(tmp, "guest data", { flag: "wx" });
    });
    await assert.rejects(publish, refused);
    assert.equal(await readFile(canary, "utf8"), "precious");
    assert.equal(await readlink(output), canary, "the symlink is neither followed nor replaced");
    assert.deepEqual((await readdir(dir)).sort(), ["canary", "out.bin"]);
  });

  it("refuses a dangling symlink at the output instead of creating its target", async () => {
    const dir = await scratch();
    const output = join(dir, "out.bin");
    await symlink(join(dir, "created-through-link"), output);
    await assert.rejects(assertOutputFree(output), refused);
    await assert.rejects(
      publishNewFile(output, (tmp) => writeFile(tmp, "x", { flag: "wx" })),
      refused,
    );
    await assert.rejects(lstat(join(dir, "created-through-link")), { code: "ENOENT" });
  });

  it("refuses an output created as a file meanwhile, keeping its content", async () => {
    const dir = await scratch();
    const output = join(dir, "out.bin");
    await assert.rejects(
      publishNewFile(output, async (tmp) => {
        await writeFile(output, "someone else's");
        await writeFile(tmp, "ours", { flag: "wx" });
      }),
      refused,
    );
    assert.equal(await readFile(output, "utf8"), "someone else's");
  });
});
