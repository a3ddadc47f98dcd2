import assert from "node:assert/strict";
import { chmod, chown, lstat, mkdir, readdir, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { resolvePaths } from "../src/paths.js";
import { runHostCommand } from "../src/process/host-command.js";
import { writeFileAtomic } from "../src/storage/atomic-file.js";
import { ensurePrivateDir, makePrivateTempDir } from "../src/storage/private-storage.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

/** uid of `nobody` (another local user), when this test runs as root. */
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

function unsafeDirectory(path: string, why: RegExp) {
  return (e: unknown) => isPyroError(e, "UNSAFE_DIRECTORY") && e.message.includes(path) && why.test(e.message) && !e.message.includes("\n");
}

describe("private directories", () => {
  const base = suiteTempDir("pyro-priv-");

  it("creates missing directories 0700", async () => {
    const dir = join(base(), "a", "b");
    await ensurePrivateDir(dir);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(base(), "a"))).mode & 0o777, 0o700);
  });

  it("tightens a directory of ours that others can read", async () => {
    const dir = join(base(), "readable");
    await mkdir(dir);
    await chmod(dir, 0o755);
    await ensurePrivateDir(dir);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
  });

  it("refuses a directory others can write to, and leaves it as it was", async () => {
    const dir = join(base(), "open");
    await mkdir(dir);
    await chmod(dir, 0o777);
    await assert.rejects(ensurePrivateDir(dir), unsafeDirectory(dir, /writable by other users/));
    await assert.rejects(makePrivateTempDir(dir, "run-"), unsafeDirectory(dir, /writable by other users/));
    assert.deepEqual(await readdir(dir), []);
    assert.equal((await stat(dir)).mode & 0o777, 0o777);
  });

  it("refuses a symbolic link, even to a directory of ours", async () => {
    const target = join(base(), "target");
    await mkdir(target, { mode: 0o700 });
    const link = join(base(), "link");
    await symlink(target, link);
    await assert.rejects(ensurePrivateDir(link), unsafeDirectory(link, /symbolic link/));
    assert.deepEqual(await readdir(target), []);
  });

  it("refuses a directory another user owns", { skip: !isRoot && "needs root to chown" }, async () => {
    const dir = join(base(), "theirs");
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, NOBODY, NOBODY);
    await assert.rejects(ensurePrivateDir(dir), unsafeDirectory(dir, new RegExp(`owned by uid ${NOBODY}`)));
  });

  it("refuses a file where a directory should be", async () => {
    const file = join(base(), "file");
    await writeFileAtomic(file, "x");
    await assert.rejects(ensurePrivateDir(file), unsafeDirectory(file, /not a directory/));
  });

  it("makes fresh run directories 0700 with unique names", async () => {
    const a = await makePrivateTempDir(join(base(), "rt"), "run-");
    const b = await makePrivateTempDir(join(base(), "rt"), "run-");
    assert.notEqual(a, b);
    for (const d of [a, b, join(base(), "rt")]) assert.equal((await lstat(d)).mode & 0o777, 0o700);
  });

  it("writes pyro's own files owner-only by default, and host tools it asks for run under umask 077", async () => {
    const file = join(base(), "state.json");
    await writeFileAtomic(file, "{}");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const ownUmask = process.umask(0o022);
    process.umask(ownUmask);
    const made = join(base(), "tool-made");
    await runHostCommand("/bin/sh", ["-c", `: > ${made}`], { privateFiles: true });
    assert.equal((await stat(made)).mode & 0o777, 0o600);
    // pyro's own umask is back, and other host tools keep it.
    const afterUmask = process.umask(0o022);
    process.umask(afterUmask);
    assert.equal(afterUmask, ownUmask);
    await runHostCommand("/bin/sh", ["-c", `: > ${made}.public`]);
    assert.equal((await stat(`${made}.public`)).mode & 0o777, 0o666 & ~ownUmask);
  });

  it("puts the runtime dir under $TMPDIR/pyro-<uid> without XDG_RUNTIME_DIR: a name another user can guess", () => {
    const paths = resolvePaths({ HOME: "/home/u", TMPDIR: "/tmp" });
    assert.equal(paths.runtimeDir, `${tmpdir()}/pyro-${process.getuid?.() ?? 0}`);
  });
});
