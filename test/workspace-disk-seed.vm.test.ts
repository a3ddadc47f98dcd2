import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmod, link, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { resolvePaths } from "../src/paths.js";
import { Pyro } from "../src/sdk/pyro.js";
import { snapshotTree } from "./helpers/tree-snapshot.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

/** A git checkout with the awkward parts: .git, symlinks (relative, absolute, dangling), exec bits, empty dirs, hardlinks, long names. */
async function makeCheckout(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "pyro-checkout-"));
  await mkdir(join(dir, "src", "deep", "er"), { recursive: true });
  await writeFile(join(dir, "src", "main.py"), "print('hi')\n");
  await writeFile(join(dir, "run.sh"), "#!/bin/sh\necho run\n", { mode: 0o755 });
  await chmod(join(dir, "run.sh"), 0o755);
  await writeFile(join(dir, "private.key"), "k\n", { mode: 0o600 });
  await chmod(join(dir, "private.key"), 0o600);
  await writeFile(join(dir, "blob.bin"), Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) % 256)));
  await mkdir(join(dir, "empty", "nested-empty"), { recursive: true });
  await symlink("src/main.py", join(dir, "link-rel"));
  await symlink("/etc/hostname", join(dir, "link-abs"));
  await symlink("does/not/exist", join(dir, "link-dangling"));
  await writeFile(join(dir, "src", "deep", "er", "shared.txt"), "one inode, two names\n");
  await link(join(dir, "src", "deep", "er", "shared.txt"), join(dir, "hard-link.txt"));
  const long = "n".repeat(240);
  await writeFile(join(dir, "src", "deep", `${long}.txt`), "long name\n");
  await writeFile(join(dir, "spaces and 'quotes' \"here\".txt"), "odd name\n");
  const git = (...args: string[]) => execFileSync("git", ["-C", dir, "-c", "user.name=t", "-c", "user.email=t@t", ...args], { stdio: "ignore" });
  git("init", "-q");
  git("add", "-A");
  git("commit", "-q", "-m", "seed");
  return dir;
}

/** A tree's observable state minus what a round trip cannot keep: directory times, owners. */
async function comparable(dir: string): Promise<Record<string, string>> {
  const snap = await snapshotTree(dir);
  const out: Record<string, string> = {};
  for (const [path, line] of Object.entries(snap)) {
    if (path === "") continue;
    // Directory and symlink times are not kept (debugfs sets them when it dumps); file times are, to the second.
    out[path] =
      line.endsWith(" dir") || line.includes(" -> ")
        ? line.replace(/ uid=\d+ mtime=[\d.]+/, "")
        : line.replace(/ uid=\d+/, "").replace(/mtime=(\d+)(\.\d+)?/, (_m, s: string) => `mtime=${Math.floor(Number(s) / 1000)}`);
  }
  return out;
}

describe("[vm] /workspace as its own disk, built from the seed on the host", () => {
  let checkout: string;
  let scratch: string;
  const created: string[] = [];
  before(async () => {
    checkout = await makeCheckout();
    scratch = await mkdtemp(join(tmpdir(), "pyro-disk-test-"));
  });
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(checkout, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });

  it("round-trips a git checkout byte-exactly (seed → export), and diffs against the seed image page by page", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12", { seedPath: checkout });
    created.push(ws.workspace_id);
    assert.equal(ws.disk_gib, 4);
    assert.deepEqual(ws.workspace_seed.skipped, []);
    // (git status would rewrite .git/index: the inodes differ from the host's, so its stat cache is refreshed.)
    const inGuest = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "findmnt -no SOURCE,FSTYPE /workspace; git log --format=%s; ./run.sh; ls -A"]);
    assert.equal(inGuest.exit_code, 0, inGuest.stderr);
    assert.match(inGuest.stdout, /^\/dev\/vd[b-z] ext4\nseed\nrun\n/);
    assert.doesNotMatch(inGuest.stdout, /lost\+found/);
    const clean = await pyro.diffWorkspace(ws.workspace_id, { summary: true });
    assert.equal(clean.changed, false, JSON.stringify(clean.files));

    const tarPath = join(scratch, "export.tar");
    const exported = await pyro.exportWorkspace(ws.workspace_id, ".", tarPath);
    assert.equal(exported.kind, "archive");
    const unpacked = join(scratch, "unpacked");
    await mkdir(unpacked);
    execFileSync("tar", ["-xf", tarPath, "-C", unpacked]);
    assert.deepEqual(await comparable(unpacked), await comparable(checkout));
    // A subdirectory exports as a tar of its contents.
    const subTar = join(scratch, "src.tar");
    await pyro.exportWorkspace(ws.workspace_id, "src", subTar);
    const subDir = join(scratch, "src-unpacked");
    await mkdir(subDir);
    execFileSync("tar", ["-xf", subTar, "-C", subDir]);
    // (Link counts differ where a hardlink's other name lies outside the subdirectory.)
    const noLinks = (tree: Record<string, string>) => Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, v.replace(/ nlink=\d+/, "")]));
    assert.deepEqual(noLinks(await comparable(subDir)), noLinks(await comparable(join(checkout, "src"))));

    // Changes: modify, add, delete, chmod, a rewrite with the same bytes, a new empty dir.
    const change = await pyro.execWorkspace(ws.workspace_id, [
      "sh",
      "-c",
      "echo more >> src/main.py && echo new > added.txt && rm blob.bin && chmod 700 private.key && cp run.sh /tmp/r && cat /tmp/r > run.sh && mkdir -p empty/another",
    ]);
    assert.equal(change.exit_code, 0, change.stderr);
    const summary = await pyro.diffWorkspace(ws.workspace_id, { summary: true });
    assert.deepEqual(
      summary.files.map((f) => `${f.status} ${f.path}`),
      ["added added.txt", "deleted blob.bin", "modified private.key", "modified run.sh", "modified src/main.py"],
    );
    assert.deepEqual(summary.summary, { added: 1, modified: 3, deleted: 1, binary: null });
    assert.equal(summary.next_offset, null);
    const full = await pyro.diffWorkspace(ws.workspace_id);
    // run.sh was rewritten with its own bytes: counted from metadata, left out of the patch.
    assert.deepEqual(
      full.files.map((f) => `${f.status} ${f.path} ${f.binary}`),
      ["added added.txt false", "deleted blob.bin true", "modified private.key false", "modified src/main.py false"],
    );
    assert.match(full.patch, /\+more/);
    assert.match(full.patch, /old mode 600\nnew mode 700/);
    assert.match(full.patch, /Binary files a\/blob\.bin and \/dev\/null differ/);
    const first = await pyro.diffWorkspace(ws.workspace_id, { limit: 2 });
    assert.equal(first.next_offset, 2);
    assert.equal(first.total_files, 5);
    const second = await pyro.diffWorkspace(ws.workspace_id, { offset: 2, limit: 2 });
    assert.deepEqual(
      second.files.map((f) => f.path),
      ["private.key"],
    ); // run.sh (same bytes) is on this page, not shown
    await assert.rejects(pyro.diffWorkspace(ws.workspace_id, { limit: 101 }), (e) => isPyroError(e, "INVALID_ARGUMENT"));

    // Reset puts the disk back to the seed.
    await pyro.resetWorkspace(ws.workspace_id);
    const afterReset = await pyro.diffWorkspace(ws.workspace_id, { summary: true });
    assert.equal(afterReset.changed, false, JSON.stringify(afterReset.files));
  });

  it("seeds, diffs and exports a 30k-file tree without the old 120 MiB ceiling", { timeout: 900_000 }, async () => {
    const tree = join(scratch, "large");
    const files = 30_000;
    for (let i = 0; i < files; i++) {
      if (i % 500 === 0) await mkdir(join(tree, `d${i / 500}`), { recursive: true });
      // ~5 KB each, distinct: ~150 MB in all, more than the old ceiling.
      await writeFile(join(tree, `d${Math.floor(i / 500)}`, `f${i}`), `${i}\n`.repeat(1000));
    }
    const ws = await pyro.createWorkspace("debian:12", { seedPath: tree });
    created.push(ws.workspace_id);
    assert.equal(ws.workspace_seed.files, files);
    const touched = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo x >> d0/f$i; done; rm d59/f29999"]);
    assert.equal(touched.exit_code, 0, touched.stderr);
    const diff = await pyro.diffWorkspace(ws.workspace_id, { summary: true });
    assert.deepEqual(diff.summary, { added: 0, modified: 10, deleted: 1, binary: null });
    const tarPath = join(scratch, "large.tar");
    const exported = await pyro.exportWorkspace(ws.workspace_id, ".", tarPath);
    assert.ok(exported.bytes > 150_000_000, String(exported.bytes));
    const listed = execFileSync("tar", ["-tf", tarPath], { maxBuffer: 64 << 20, encoding: "utf8" })
      .split("\n")
      .filter((l) => /\/f\d+$/.test(l));
    assert.equal(listed.length, files - 1);
    await pyro.deleteWorkspace(ws.workspace_id);
    created.pop();
    await rm(tree, { recursive: true, force: true });
  });

  it("refuses a seed larger than the disk before creating anything, and reports special files it leaves out", TIMEOUT, async () => {
    const big = join(scratch, "big");
    await mkdir(big);
    await writeFile(join(big, "huge.bin"), "");
    await truncate(join(big, "huge.bin"), 2 * 2 ** 30); // sparse: costs nothing here, 2 GiB in a workspace
    const workspacesDir = join(resolvePaths().stateDir, "workspaces");
    const before = await readdir(workspacesDir).catch(() => [] as string[]);
    const started = Date.now();
    await assert.rejects(
      pyro.createWorkspace("debian:12", { seedPath: big, diskGib: 1 }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /more than the 1 GiB workspace disk holds.*--disk-gib 3/.test(e.message),
    );
    assert.ok(Date.now() - started < 5_000, "fails fast");
    assert.deepEqual(await readdir(workspacesDir).catch(() => [] as string[]), before);

    const special = join(scratch, "special");
    await mkdir(special);
    await writeFile(join(special, "ok.txt"), "ok\n");
    assert.equal(spawnSync("mkfifo", [join(special, "pipe")]).status, 0);
    const ws = await pyro.createWorkspace("debian:12", { seedPath: special, diskGib: 1 });
    created.push(ws.workspace_id);
    assert.equal(ws.disk_gib, 1);
    assert.deepEqual(ws.workspace_seed.skipped, [{ path: "pipe", reason: "FIFO" }]);
    const ls = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "ls -A; df -k --output=size /workspace | tail -1"]);
    assert.match(ls.stdout, /^ok\.txt\n\s*\d+\n$/);
    assert.ok(Number(ls.stdout.split("\n")[1]) < 1.1 * 2 ** 20, ls.stdout);
  });

  it("exports with redaction without writing through the guest's symlinks (one named like pyro's redacted copy)", TIMEOUT, async () => {
    const secret = "hunter2-disk-export-secret";
    const victim = join(scratch, "victim");
    await writeFile(victim, "host data");
    const seed = join(scratch, "redact-seed");
    await mkdir(seed);
    await writeFile(join(seed, "seeded.txt"), "seeded");
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seed, secrets: { TOKEN: secret } });
    created.push(ws.workspace_id);
    // Root in the guest plants a link to a host path where pyro would write the redacted copy of notes.
    const plant = await pyro.execWorkspace(ws.workspace_id, [
      "sh",
      "-c",
      `printf 'token ${secret} here' > notes && ln -s ${victim} notes.pyro-redacted && mkdir sub && ln notes sub/again`,
    ]);
    assert.equal(plant.exit_code, 0, plant.stderr);
    const tarPath = join(scratch, "redacted.tar");
    await pyro.exportWorkspace(ws.workspace_id, ".", tarPath);
    assert.equal(await readFile(victim, "utf8"), "host data");
    const unpacked = join(scratch, "redacted-unpacked");
    await mkdir(unpacked);
    execFileSync("tar", ["-xf", tarPath, "-C", unpacked]);
    assert.equal(await readFile(join(unpacked, "notes"), "utf8"), "token [REDACTED] here");
    assert.equal((await lstat(join(unpacked, "notes"))).ino, (await lstat(join(unpacked, "sub", "again"))).ino);
    assert.equal(await readlink(join(unpacked, "notes.pyro-redacted")), victim);
  });
});
