import assert from "node:assert/strict";
import { lstat, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { list } from "tar";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

/** Every entry of a tar: its path and the mode its header states. */
async function tarModes(file: string): Promise<Record<string, number>> {
  const modes: Record<string, number> = {};
  await list({
    file,
    onReadEntry: (e) => {
      modes[e.path.replace(/^\.\//, "").replace(/\/$/, "")] = e.mode ?? -1;
    },
  });
  return modes;
}

/** Root in the guest makes setuid/setgid files and directories, a sticky directory, and (optionally) a sparse 64 GiB file. */
const PLANT = [
  "printf x > suid && chmod 4755 suid",
  "mkdir sgid && chmod 2775 sgid && printf y > sgid/both && chmod 6755 sgid/both",
  "mkdir sticky && chmod 1777 sticky",
].join(" && ");
const SPARSE = "mkdir holes && truncate -s 64G holes/huge && printf z > holes/small";

/** The modes the host must get: setuid and setgid gone, the rest as the guest had it. */
const EXPECTED = { suid: 0o755, sgid: 0o775, "sgid/both": 0o755, sticky: 0o1777 };

describe("[vm] what an export may carry to the host (the guest's root made every byte of it)", () => {
  let scratch: string;
  let seed: string;
  const created: string[] = [];
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-export-bounds-"));
    seed = join(scratch, "seed");
    await mkdir(seed);
    await writeFile(join(seed, "seeded.txt"), "seeded\n");
  });
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("drops setuid and setgid bits from the archive, keeping the other mode bits", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seed, diskGib: 1 });
    created.push(ws.workspace_id);
    const plant = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", `${PLANT} && stat -c '%a %n' suid sgid sgid/both sticky`]);
    assert.equal(plant.exit_code, 0, plant.stderr);
    assert.match(plant.stdout, /^4755 suid\n2775 sgid\n6755 sgid\/both\n1777 sticky\n$/);
    const tar = join(scratch, "modes.tar");
    await pyro.exportWorkspace(ws.workspace_id, ".", tar);
    const modes = await tarModes(tar);
    for (const [path, mode] of Object.entries(EXPECTED)) assert.equal(modes[path]?.toString(8), mode.toString(8), path);
    assert.equal(modes["seeded.txt"]?.toString(8), "644");
  });

  it("refuses a directory whose files hold more than its disk (sparse files) before writing anything; a directory without them exports", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seed, diskGib: 1 });
    created.push(ws.workspace_id);
    const plant = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", SPARSE]);
    assert.equal(plant.exit_code, 0, plant.stderr);
    const tar = join(scratch, "sparse.tar");
    const started = Date.now();
    await assert.rejects(
      pyro.exportWorkspace(ws.workspace_id, ".", tar),
      (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /more than its \d+-byte disk can store.*holes\/huge/.test(e.message),
    );
    assert.ok(Date.now() - started < 60_000, "refused up front, not after streaming 64 GiB");
    assert.equal(await lstat(tar).catch(() => undefined), undefined, "nothing is left at the output path");
    // The same bound in a subdirectory (its own walk, its own names)…
    await assert.rejects(pyro.exportWorkspace(ws.workspace_id, "holes", tar), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /'huge'/.test(e.message));
    // …and what does not hold the sparse file exports as usual.
    const rm = await pyro.execWorkspace(ws.workspace_id, ["rm", "holes/huge"]);
    assert.equal(rm.exit_code, 0, rm.stderr);
    await pyro.exportWorkspace(ws.workspace_id, "holes", tar);
    assert.deepEqual(Object.keys(await tarModes(tar)), ["small"]);
  });

  it("holds the dump-and-redact path (a workspace with secrets) to the same two rules", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seed, diskGib: 1, secrets: { TOKEN: "hunter2-export-bounds" } });
    created.push(ws.workspace_id);
    const plant = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", `${PLANT} && ${SPARSE}`]);
    assert.equal(plant.exit_code, 0, plant.stderr);
    const tar = join(scratch, "redacted.tar");
    await assert.rejects(pyro.exportWorkspace(ws.workspace_id, ".", tar), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /holes\/huge/.test(e.message));
    assert.equal((await pyro.execWorkspace(ws.workspace_id, ["rm", "holes/huge"])).exit_code, 0);
    await pyro.exportWorkspace(ws.workspace_id, ".", tar);
    const modes = await tarModes(tar);
    // debugfs's dump keeps permissions but not the sticky bit; what matters here is that no setuid/setgid survives.
    for (const path of Object.keys(EXPECTED))
      assert.equal(((modes[path] ?? -1) & 0o7777 & ~0o1000).toString(8), (EXPECTED[path as keyof typeof EXPECTED] & ~0o1000).toString(8), path);
  });
});
