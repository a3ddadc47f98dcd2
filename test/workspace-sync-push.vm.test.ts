import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { link, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { PUSH_BATCH_BYTES } from "../src/workspaces/directory-tar-batches.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

describe("[vm] sync push streams a directory in batches the agent unpacks", () => {
  let scratch: string;
  let id: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-push-"));
    const seed = join(scratch, "seed");
    await mkdir(join(seed, "app"), { recursive: true });
    await writeFile(join(seed, "app", "old.txt"), "old\n");
    id = (await pyro.createWorkspace("debian:12", { seedPath: seed })).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("writes every entry exactly, over what the guest holds, with nothing staged on the guest's disk", TIMEOUT, async () => {
    // No room to stage an upload: /var/tmp becomes a read-only tmpfs. The guest also plants a link
    // where a pushed file goes, and gives a pushed name a second (hard) name.
    await pyro.execWorkspace(
      id,
      "mount -t tmpfs -o ro,size=1m tmpfs /var/tmp && echo keep > /etc/pyro-canary && ln -s /etc/pyro-canary /workspace/app/link-trap.txt && echo before > /workspace/app/shared && ln /workspace/app/shared /workspace/shared-other",
    );
    const src = join(scratch, "src");
    const long = `${"d".repeat(110)}/${"f".repeat(200)}.txt`;
    await mkdir(join(src, "app", "bin"), { recursive: true });
    await mkdir(join(src, "d".repeat(110)));
    await mkdir(join(src, "empty"));
    await writeFile(join(src, "app", "bin", "run"), "#!/bin/sh\necho ran\n", { mode: 0o750 });
    await utimes(join(src, "app", "bin", "run"), 1_600_000_000, 1_600_000_000);
    await writeFile(join(src, "app", "link-trap.txt"), "pushed\n");
    await writeFile(join(src, "app", "shared"), "after\n");
    await writeFile(join(src, long), "long name\n");
    await symlink("bin/run", join(src, "app", "run-link"));
    await link(join(src, "app", "bin", "run"), join(src, "app", "run-hard"));
    // Bigger than one batch: the push takes several requests.
    const big = Buffer.alloc(PUSH_BATCH_BYTES + 12_345);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
    await writeFile(join(src, "app", "big.bin"), big);
    for (let i = 0; i < 50; i++) await writeFile(join(src, "app", `small-${i}.txt`), `small ${i}\n`);

    const pushed = await pyro.pushWorkspaceSync(id, src);
    assert.deepEqual(
      { files: pushed.files, directories: pushed.directories, symlinks: pushed.symlinks, mode: pushed.mode },
      { files: 56, directories: 4, symlinks: 1, mode: "directory" },
    );
    const check = await pyro.execWorkspace(
      id,
      [
        "cd /workspace",
        "stat -c '%a %Y %h' app/bin/run",
        "app/bin/run",
        "cat /etc/pyro-canary app/link-trap.txt app/shared shared-other",
        "test -L app/link-trap.txt && echo link || echo not-link",
        "readlink app/run-link",
        "stat -c '%i' app/bin/run app/run-hard | uniq | wc -l",
        `cat '${long}'`,
        "test -d empty && echo empty-dir",
        "cat app/old.txt app/small-49.txt",
        "sha256sum app/big.bin | cut -d' ' -f1",
        "find / -xdev -name '.pyro-*' 2>/dev/null | wc -l",
      ].join(" && "),
    );
    assert.equal(check.exit_code, 0, check.stderr);
    assert.deepEqual(check.stdout.trim().split("\n"), [
      "750 1600000000 2",
      "ran",
      "keep",
      "pushed",
      "after",
      "before",
      "not-link",
      "bin/run",
      "1",
      "long name",
      "empty-dir",
      "old",
      "small 49",
      createHash("sha256").update(big).digest("hex"),
      "0",
    ]);
  });

  it("rewrites a file with one name in place, its pages cached or not, and replaces a running program", TIMEOUT, async () => {
    // Old sizes around the new ones' last pages: grown within a page, cut inside one, grown past one.
    const pattern = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) % 251));
    const files = { "tail.txt": [12_001, 12_008], "shrink.txt": [9_000, 5_000], "grow.txt": [5_000, 9_000], "page.txt": [8_000, 4_096] } as const;
    const setup = Object.entries(files).map(([name, [old]]) => `head -c ${old} /dev/urandom > /workspace/inplace/${name}`);
    await pyro.execWorkspace(
      id,
      [
        "mkdir -p /workspace/inplace",
        ...setup,
        "cp /bin/sleep /workspace/inplace/busy",
        "(/workspace/inplace/busy 120 </dev/null >/dev/null 2>&1 &)",
        "sleep 1",
        // Nothing cached: the pushed files' old pages must come from the disk (or be cut), not memory.
        "sync && echo 3 > /proc/sys/vm/drop_caches",
      ].join(" && "),
    );
    // Inode number and birth time: ext4 hands a freed inode number straight to the next create.
    const inodes = async () => (await pyro.execWorkspace(id, "cd /workspace/inplace && stat -c '%n %i %.9W' * | sort")).stdout;
    const before = await inodes();
    const src = join(scratch, "inplace");
    await mkdir(src);
    for (const [name, [, size]] of Object.entries(files)) await writeFile(join(src, name), pattern(size, name.length), { mode: 0o640 });
    await writeFile(join(src, "busy"), "#!/bin/sh\necho replaced\n", { mode: 0o755 });
    await pyro.pushWorkspaceSync(id, src, { dest: "inplace" });
    const after = await inodes();
    const line = (listing: string, name: string) => listing.split("\n").find((l) => l.startsWith(`${name} `));
    for (const name of Object.keys(files)) assert.equal(line(after, name), line(before, name), `${name} is the same inode, rewritten`);
    assert.notEqual(line(after, "busy"), line(before, "busy"), "a running program (ETXTBSY) is replaced by a new file");
    const check = await pyro.execWorkspace(
      id,
      ["cd /workspace/inplace", "sha256sum tail.txt shrink.txt grow.txt page.txt | cut -d' ' -f1", "stat -c '%a %s' tail.txt shrink.txt", "./busy"].join(
        " && ",
      ),
    );
    assert.equal(check.exit_code, 0, check.stderr);
    assert.deepEqual(check.stdout.trim().split("\n"), [
      ...Object.entries(files).map(([name, [, size]]) => createHash("sha256").update(pattern(size, name.length)).digest("hex")),
      "640 12008",
      "640 5000",
      "replaced",
    ]);
  });

  it("what a push wrote is on the workspace's disk when it returns: a VMM killed at once loses none of it", TIMEOUT, async () => {
    await pyro.execWorkspace(id, "mkdir -p /workspace/durable && head -c 12001 /dev/urandom > /workspace/durable/old.txt && sync");
    const src = join(scratch, "durable");
    await mkdir(join(src, "new-dir"), { recursive: true });
    const rewritten = Buffer.alloc(12_008, "r");
    const created = Buffer.alloc(70_000, "n");
    await writeFile(join(src, "old.txt"), rewritten);
    await writeFile(join(src, "new-dir", "new.bin"), created);
    await pyro.pushWorkspaceSync(id, src, { dest: "durable" });
    // No shutdown, no later sync: whatever the guest still held only in its memory is gone.
    process.kill((await pyro.statusWorkspace(id)).vm!.pid, "SIGKILL");
    await pyro.startWorkspace(id);
    const check = await pyro.execWorkspace(id, "cd /workspace/durable && sha256sum old.txt new-dir/new.bin | cut -d' ' -f1");
    assert.equal(check.exit_code, 0, check.stderr);
    assert.deepEqual(
      check.stdout.trim().split("\n"),
      [rewritten, created].map((b) => createHash("sha256").update(b).digest("hex")),
    );
  });

  it("refuses to put a file where the guest has a directory, naming it", TIMEOUT, async () => {
    await pyro.execWorkspace(id, "mkdir -p /workspace/clash/was-a-dir");
    const src = join(scratch, "clash");
    await mkdir(src);
    await writeFile(join(src, "was-a-dir"), "file\n");
    await assert.rejects(pyro.pushWorkspaceSync(id, src, { dest: "clash" }), (e: Error) => /clash\/was-a-dir/.test(e.message) && /directory/i.test(e.message));
  });
});
