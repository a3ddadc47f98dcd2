import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };

/**
 * Every entry under the current directory as `path|type|mode|size|target|mtime-seconds` (directory
 * sizes and symlink times left out: filesystems differ there), then each file's sha256, sorted;
 * GNU find on both sides, so guest and host print alike. FIFOs are not exported.
 */
const LIST_SCRIPT = [
  "find . -mindepth 1 ! -type p -printf '%P|%y|%m|%s|%l|%T@\\n'",
  "sed -E -e 's/\\.[0-9]+$//' -e 's/^([^|]*)\\|d\\|([0-7]+)\\|[0-9]+\\|/\\1|d|\\2|-|/' -e 's/^([^|]*\\|l\\|.*)\\|[0-9]+$/\\1|-/'",
  "sort; find . -type f -exec sha256sum {} + | sort -k2",
].join(" | ");

describe("[vm] export streams the workspace disk through pyro's own qcow2 and ext4 readers", () => {
  let scratch: string;
  let seed: string;
  const created: string[] = [];
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-export-disk-"));
    seed = join(scratch, "seed");
    await mkdir(join(seed, "src", "deep"), { recursive: true });
    await writeFile(join(seed, "src", "main.py"), "print('hi')\n");
    await writeFile(join(seed, "src", "deep", "x.txt"), "deep\n");
    await writeFile(join(seed, "run.sh"), "#!/bin/sh\necho run\n", { mode: 0o755 });
    await writeFile(join(seed, "blob.bin"), Buffer.alloc(50_000, 7));
  });
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("exports what the running guest sees right after it wrote: names, modes, times (directories too), links, bytes", TIMEOUT, async () => {
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seed });
    created.push(ws.workspace_id);
    const change = await pyro.execWorkspace(ws.workspace_id, [
      "sh",
      "-c",
      [
        "set -e",
        "mkdir -p gen/many moved",
        "i=0; while [ $i -lt 1500 ]; do echo $i > gen/many/f$i; i=$((i+1)); done",
        "head -c 3000000 /dev/urandom > gen/big.bin",
        "echo changed >> src/main.py",
        "ln gen/big.bin gen/big-link",
        "ln -s ../src/main.py gen/rel-link",
        `ln -s ${"L".repeat(300)} gen/long-link`,
        "mv src/deep moved/deep",
        "rm -f blob.bin",
        "chmod 4755 run.sh",
        "mkfifo gen/fifo",
        "truncate -s 1M gen/sparse && echo x >> gen/sparse",
        "touch -d @1500000000 gen/old",
        "mkdir gen/empty",
      ].join("\n"),
    ]);
    assert.equal(change.exit_code, 0, change.stderr);
    const guest = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", `cd /workspace && ${LIST_SCRIPT}`]);
    assert.equal(guest.exit_code, 0, guest.stderr);

    const tarPath = join(scratch, "all.tar");
    const exported = await pyro.exportWorkspace(ws.workspace_id, ".", tarPath);
    assert.equal(exported.kind, "archive");
    const unpacked = join(scratch, "all");
    await mkdir(unpacked);
    execFileSync("tar", ["-xpf", tarPath, "-C", unpacked]);
    const host = execFileSync("sh", ["-c", LIST_SCRIPT], { cwd: unpacked, encoding: "utf8" });
    // The one expected difference: setuid is dropped on export.
    const expected = guest.stdout.replace("run.sh|f|4755|", "run.sh|f|755|");
    const only = (a: string, b: string) => a.split("\n").filter((line) => !b.split("\n").includes(line));
    assert.deepEqual({ exportedOnly: only(host, expected), guestOnly: only(expected, host) }, { exportedOnly: [], guestOnly: [] });
    assert.equal(host, expected);
    assert.match(host, /gen\/many\/f1499\|f\|644\|5\|/);
    assert.match(host, /gen\/old\|f\|644\|0\|\|1500000000\n/);
    // Hardlinks come back as hardlinks.
    assert.equal(execFileSync("stat", ["-c", "%h", join(unpacked, "gen", "big-link")], { encoding: "utf8" }).trim(), "2");

    // A subdirectory, and the guest keeps working after the pause.
    const subTar = join(scratch, "moved.tar");
    await pyro.exportWorkspace(ws.workspace_id, "moved", subTar);
    assert.deepEqual(execFileSync("tar", ["-tf", subTar], { encoding: "utf8" }).trim().split("\n").sort(), ["./deep/", "./deep/x.txt"]);
    const still = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo ok > /workspace/after && cat /workspace/after"]);
    assert.equal(still.stdout, "ok\n");
  });
});
