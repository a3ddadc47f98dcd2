import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

/**
 * Names the guest chose that a tar cannot carry as they are: an export must not rename them on
 * the way to the host (a byte 0xe9 arriving as the four characters '\xe9') without saying so.
 */
describe("[vm] export of names that are not UTF-8", () => {
  let scratch: string;
  const created: string[] = [];
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-export-names-"));
  });
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("refuses a directory holding one, with a typed error naming it; a directory without one still exports", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    const made = await pyro.execWorkspace(ws.workspace_id, [
      "sh",
      "-c",
      "set -e; mkdir -p /workspace/latin1 /workspace/plain; printf 'x\\n' > \"$(printf '/workspace/latin1/caf\\351.txt')\"; echo ok > /workspace/plain/ok.txt",
    ]);
    assert.equal(made.exit_code, 0, made.stderr);
    const tarPath = join(scratch, "latin1.tar");
    await assert.rejects(
      () => pyro.exportWorkspace(ws.workspace_id, "latin1", tarPath),
      (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /not UTF-8/.test(e.message) && !e.message.includes("\n"),
    );
    assert.deepEqual(await readdir(scratch), [], "nothing is left on the host");
    const plain = join(scratch, "plain.tar");
    await pyro.exportWorkspace(ws.workspace_id, "plain", plain);
    const out = join(scratch, "plain");
    await mkdir(out);
    execFileSync("tar", ["-xf", plain, "-C", out]);
    assert.deepEqual(await readdir(out), ["ok.txt"]);
  });
});
