import assert from "node:assert/strict";
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { list as listTar } from "tar";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";
import { makeTar } from "./helpers/tar-builder.js";
import { FIX_PATCH, makeSeedRepo } from "./helpers/workspace-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

describe("[vm] editing a workspace: exec, files, patches, sync, diff, export, snapshots", () => {
  let seed: Awaited<ReturnType<typeof makeSeedRepo>>;
  let scratch: string;
  let id: string;
  before(async () => {
    seed = await makeSeedRepo();
    scratch = await mkdtemp(join(tmpdir(), "pyro-edit-"));
    id = (await pyro.createWorkspace("debian:12", { seedPath: seed.dir })).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
    await seed.dispose();
    await rm(scratch, { recursive: true, force: true });
  });

  it("runs the repro-fix loop: failing test, patch, passing test, diff", TIMEOUT, async () => {
    const failing = await pyro.execWorkspace(id, ["./test.sh"]);
    assert.notEqual(failing.exit_code, 0);
    assert.match(failing.stderr, /AssertionError: -1/);
    const patched = await pyro.applyWorkspacePatch(id, FIX_PATCH);
    assert.deepEqual(patched.files, [{ path: "src/calc.py", status: "modified" }]);
    const passing = await pyro.execWorkspace(id, ["./test.sh"]);
    assert.equal(passing.exit_code, 0, passing.stderr);
    assert.equal(passing.stdout, "tests pass\n");
    assert.equal((await pyro.statusWorkspace(id)).command_count, 2);
    const logs = await pyro.logsWorkspace(id);
    assert.deepEqual(
      logs.commands.map((c) => [c.sequence, c.command, c.exit_code !== 0]),
      [
        [1, ["./test.sh"], true],
        [2, ["./test.sh"], false],
      ],
    );
    const diff = await pyro.diffWorkspace(id);
    assert.ok(diff.changed);
    assert.match(diff.patch, /--- a\/src\/calc\.py\n\+\+\+ b\/src\/calc\.py/);
    assert.match(diff.patch, /-    return a - b\n\+    return a \+ b/);
  });

  it("applies multi-file patches with creation and deletion, all or nothing", TIMEOUT, async () => {
    const multi = `--- a/README.md
+++ b/README.md
@@ -1 +1 @@
-demo
+demo, patched
--- /dev/null
+++ b/docs/new.md
@@ -0,0 +1,2 @@
+# New
+page
--- a/logo.bin
+++ /dev/null
@@ -1 +0,0 @@
-\u0000\u0001\u0002\u0003\u00ff
`;
    // logo.bin is binary: the whole patch must fail and nothing may change.
    await assert.rejects(
      pyro.applyWorkspacePatch(id, multi),
      (e) => isPyroError(e, "PATCH_FAILED") && /logo\.bin/.test(e.message) && /nothing was changed/.test(e.message),
    );
    assert.equal((await pyro.readWorkspaceFile(id, "README.md")).content, "demo\n");
    await assert.rejects(pyro.readWorkspaceFile(id, "docs/new.md"));
    const good = multi.slice(0, multi.indexOf("--- a/logo.bin"));
    const r = await pyro.applyWorkspacePatch(
      id,
      good + "--- a/src/calc.py\n+++ /dev/null\n@@ -1,6 +0,0 @@\n-def add(a, b):\n-    return a + b\n-\n-\n-def mul(a, b):\n-    return a * b\n",
    );
    assert.deepEqual(
      r.files.map((f) => `${f.status}:${f.path}`),
      ["modified:README.md", "added:docs/new.md", "deleted:src/calc.py"],
    );
    assert.equal((await pyro.readWorkspaceFile(id, "docs/new.md")).content, "# New\npage\n");
    await assert.rejects(pyro.readWorkspaceFile(id, "src/calc.py"));
    const stale = "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-something else\n+x\n";
    await assert.rejects(pyro.applyWorkspacePatch(id, stale), (e) => isPyroError(e, "PATCH_FAILED") && /hunk 1 of 1 for README\.md/.test(e.message));
    await assert.rejects(pyro.applyWorkspacePatch(id, "not a patch"), (e) => isPyroError(e, "PATCH_FAILED"));
  });

  it("reads, writes and lists files without quoting, confined to /workspace", TIMEOUT, async () => {
    await pyro.writeWorkspaceFile(id, 'notes/it\'s "quoted" $HOME.txt', "line1\nline2\n");
    assert.equal((await pyro.readWorkspaceFile(id, 'notes/it\'s "quoted" $HOME.txt')).content, "line1\nline2\n");
    const partial = await pyro.readWorkspaceFile(id, 'notes/it\'s "quoted" $HOME.txt', { maxBytes: 3 });
    assert.equal(partial.content, "lin");
    assert.equal(partial.truncated, true);
    const binary = await pyro.readWorkspaceFile(id, "logo.bin");
    assert.equal(binary.encoding, "base64");
    assert.deepEqual([...Buffer.from(binary.content, "base64")], [0, 1, 2, 3, 255]);
    const listing = await pyro.listWorkspaceFiles(id, ".", { recursive: true });
    assert.ok(listing.entries.some((e) => e.path === 'notes/it\'s "quoted" $HOME.txt' && e.type === "file"));
    for (const bad of ["../etc/passwd", "/etc/shadow", "/workspace/../root/.bashrc"]) {
      await assert.rejects(pyro.readWorkspaceFile(id, bad), (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE"), bad);
      await assert.rejects(pyro.writeWorkspaceFile(id, bad, "x"), (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE"), bad);
    }
    await assert.rejects(pyro.execWorkspace(id, ["true"], { cwd: "../.." }), (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE"));
  });

  it("never follows a symlink the guest planted out of /workspace: files, lists, patches, deletions, sync push", TIMEOUT, async () => {
    await pyro.execWorkspace(
      id,
      "echo keep > /etc/pyro-canary && ln -s / /workspace/root && ln -s /etc /workspace/etc-link && mkdir -p inside && echo in > inside/f && ln -s inside rel",
    );
    const outside = (e: unknown) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE") && /symbolic link/.test(e.message);
    await assert.rejects(pyro.readWorkspaceFile(id, "root/etc/pyro-canary"), outside);
    await assert.rejects(pyro.readWorkspaceFile(id, "etc-link/pyro-canary"), outside);
    await assert.rejects(pyro.writeWorkspaceFile(id, "root/etc/pyro-canary", "pwned"), outside);
    await assert.rejects(pyro.writeWorkspaceFile(id, "etc-link/pyro-new", "pwned"), outside);
    await assert.rejects(pyro.listWorkspaceFiles(id, "root/etc"), outside);
    await assert.rejects(pyro.applyWorkspacePatch(id, "--- a/etc-link/pyro-canary\n+++ b/etc-link/pyro-canary\n@@ -1 +1 @@\n-keep\n+pwned\n"), outside);
    await assert.rejects(pyro.applyWorkspacePatch(id, "--- a/root/etc/pyro-canary\n+++ /dev/null\n@@ -1 +0,0 @@\n-keep\n"), outside);
    const tree = join(scratch, "through-links");
    await mkdir(join(tree, "etc-link"), { recursive: true });
    await writeFile(join(tree, "etc-link", "pyro-pushed"), "pwned\n");
    await assert.rejects(pyro.pushWorkspaceSync(id, join(tree, "etc-link"), { dest: "etc-link" }), outside);
    await assert.rejects(pyro.pushWorkspaceSync(id, join(tree, "etc-link"), { dest: "root/etc" }), outside);
    await assert.rejects(pyro.pushWorkspaceSync(id, tree), outside, "an archive entry under a planted link");
    const etc = await pyro.execWorkspace(
      id,
      "cat /etc/pyro-canary; ls /etc/pyro-new /etc/pyro-pushed 2>&1 | wc -l; ls /workspace/etc-link/pyro-pushed 2>&1 | grep -c 'No such'",
    );
    assert.equal(etc.stdout, "keep\n2\n1\n", "/etc untouched");
    // Links that stay inside /workspace still work, and a link itself can be listed and removed.
    assert.equal((await pyro.readWorkspaceFile(id, "rel/f")).content, "in\n");
    const listing = await pyro.listWorkspaceFiles(id, ".");
    assert.deepEqual(
      listing.entries.find((e) => e.path === "root"),
      { ...listing.entries.find((e) => e.path === "root"), type: "symlink", target: "/" },
    );
    await pyro.applyWorkspacePatch(id, "--- a/rel/f\n+++ b/rel/f\n@@ -1 +1 @@\n-in\n+in2\n");
    assert.equal((await pyro.readWorkspaceFile(id, "inside/f")).content, "in2\n");
    await pyro.execWorkspace(id, "rm -rf /workspace/root /workspace/etc-link /workspace/rel /workspace/inside /etc/pyro-canary");
  });

  it("keeps commands from tracing the agent (PID 1), while a process may still trace its own children", TIMEOUT, async () => {
    const script = [
      "import ctypes, errno, os",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]",
      "def tr(req, pid):",
      "    return 'ok' if libc.ptrace(req, pid, None, None) == 0 else errno.errorcode[ctypes.get_errno()]",
      "def attempt(fn):",
      "    try:",
      "        fn(); return 'ok'",
      "    except OSError as e:",
      "        return errno.errorcode[e.errno]",
      "print('attach', tr(16, 1))",
      "print('seize', tr(0x4206, 1))",
      "print('mem', attempt(lambda: open('/proc/1/mem', 'rb').read(1)))",
      "print('scope-write', attempt(lambda: os.write(os.open('/proc/sys/kernel/yama/ptrace_scope', os.O_WRONLY), b'0')))",
      "print('scope', open('/proc/sys/kernel/yama/ptrace_scope').read().strip())",
      "print('modules_disabled', open('/proc/sys/kernel/modules_disabled').read().strip())",
      "print('kexec_load_disabled', open('/proc/sys/kernel/kexec_load_disabled').read().strip())",
      "libc.syscall.restype = ctypes.c_long",
      // kexec_load(entry 0, no segments, flags 0) and reboot(magic, magic2, LINUX_REBOOT_CMD_CAD_OFF): CAP_SYS_BOOT is gone.
      "print('kexec_load', 'ok' if libc.syscall(246, 0, 0, None, 0) == 0 else errno.errorcode[ctypes.get_errno()])",
      "print('reboot', 'ok' if libc.syscall(169, ctypes.c_uint(0xfee1dead), 672274793, 0, None) == 0 else errno.errorcode[ctypes.get_errno()])",
      "pid = os.fork()",
      "if pid == 0:",
      "    libc.ptrace(0, 0, None, None); os.kill(os.getpid(), 19); os._exit(7)",
      "_, st = os.waitpid(pid, 0)",
      "stopped = os.WIFSTOPPED(st)",
      "libc.ptrace(7, pid, None, None)",
      "_, st = os.waitpid(pid, 0)",
      "print('traceme-child', stopped, os.WEXITSTATUS(st))",
      "pid = os.fork()",
      "if pid == 0:",
      "    import time; time.sleep(30); os._exit(0)",
      "print('attach-child', tr(16, pid))",
      "os.kill(pid, 9); os.waitpid(pid, 0)",
    ].join("\n");
    const r = await pyro.execWorkspace(id, ["python3", "-c", script]);
    assert.equal(r.exit_code, 0, r.stderr);
    assert.equal(
      r.stdout,
      [
        "attach EPERM",
        "seize EPERM",
        `mem ${/mem (EACCES|EPERM)/.exec(r.stdout)?.[1] ?? "EACCES"}`,
        "scope-write EPERM",
        "scope 1",
        "modules_disabled 1",
        "kexec_load_disabled 1",
        "kexec_load EPERM",
        "reboot EPERM",
        "traceme-child True 7",
        "attach-child ok",
        "",
      ].join("\n"),
    );
    assert.match(r.stdout, /mem (EACCES|EPERM)/);
    const caps = await pyro.execWorkspace(id, ["grep", "CapBnd", "/proc/self/status"]);
    const bounding = BigInt(`0x${caps.stdout.split(/\s+/)[1]}`);
    assert.equal(bounding & ((1n << 19n) | (1n << 16n)), 0n, "CAP_SYS_PTRACE and CAP_SYS_MODULE are gone from the bounding set");
    assert.equal(bounding & ((1n << 22n) | (1n << 38n) | (1n << 39n)), 0n, "CAP_SYS_BOOT, CAP_PERFMON and CAP_BPF are gone from the bounding set");
    assert.notEqual(bounding & (1n << 21n), 0n, "other capabilities (CAP_SYS_ADMIN) remain");
  });

  it("pushes directories and archives, refuses hostile ones, and diffs additions, deletions and binaries", TIMEOUT, async () => {
    const dir = join(scratch, "changes");
    await mkdir(join(dir, "lib"), { recursive: true });
    await writeFile(join(dir, "lib", "util.py"), "X = 1\n");
    const pushed = await pyro.pushWorkspaceSync(id, dir, { dest: "vendor" });
    assert.equal(pushed.destination, "/workspace/vendor");
    assert.equal(pushed.files, 1);
    await writeFile(
      join(scratch, "more.tgz"),
      gzipSync(
        makeTar([
          { path: "assets/", type: "dir" },
          { path: "assets/img.bin", content: Buffer.from([0, 159, 146, 150]) },
        ]),
      ),
    );
    await pyro.pushWorkspaceSync(id, join(scratch, "more.tgz"));
    await writeFile(
      join(scratch, "evil.tar"),
      makeTar([
        { path: "ok.txt", content: "fine" },
        { path: "dev", type: "symlink", linkpath: "/dev" },
        { path: "dev/sda", content: "x" },
      ]),
    );
    await assert.rejects(pyro.pushWorkspaceSync(id, join(scratch, "evil.tar")), (e) => isPyroError(e, "UNSAFE_ARCHIVE"));
    await assert.rejects(pyro.readWorkspaceFile(id, "ok.txt"), (e) => isPyroError(e, "GUEST_OPERATION_FAILED"), "nothing from a refused archive lands");
    await pyro.execWorkspace(id, ["rm", "README.md"]);
    const diff = await pyro.diffWorkspace(id);
    const byPath = new Map(diff.files.map((f) => [f.path, f]));
    assert.equal(byPath.get("vendor/lib/util.py")?.status, "added");
    assert.equal(byPath.get("README.md")?.status, "deleted");
    assert.deepEqual(byPath.get("assets/img.bin"), { path: "assets/img.bin", status: "added", binary: true });
    assert.match(diff.patch, /Binary files \/dev\/null and b\/assets\/img\.bin differ/);
    assert.match(diff.patch, /--- a\/README\.md\n\+\+\+ \/dev\/null/);
  });

  it("exports a file as itself and a directory as a tar, never overwriting", TIMEOUT, async () => {
    const file = join(scratch, "util.py");
    const r = await pyro.exportWorkspace(id, "vendor/lib/util.py", file);
    assert.equal(r.kind, "file");
    assert.equal(await readFile(file, "utf8"), "X = 1\n");
    await assert.rejects(pyro.exportWorkspace(id, "vendor/lib/util.py", file), (e) => isPyroError(e, "INVALID_ARGUMENT") && /already exists/.test(e.message));
    const tarPath = join(scratch, "vendor.tar");
    assert.equal((await pyro.exportWorkspace(id, "vendor", tarPath)).kind, "archive");
    const names: string[] = [];
    await listTar({ file: tarPath, onReadEntry: (e) => void names.push(e.path) });
    assert.ok(names.includes("./lib/util.py"), names.join(","));
    await assert.rejects(pyro.exportWorkspace(id, "../etc/passwd", join(scratch, "p")), (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE"));
    // An output that is a symlink (here dangling) is refused: nothing is written through it.
    const linked = join(scratch, "linked.py");
    await symlink(join(scratch, "canary-target"), linked);
    await assert.rejects(pyro.exportWorkspace(id, "vendor/lib/util.py", linked), (e) => isPyroError(e, "INVALID_ARGUMENT") && /already exists/.test(e.message));
    await assert.rejects(lstat(join(scratch, "canary-target")), { code: "ENOENT" });
  });

  it("snapshots and resets: back to the baseline, or to a named snapshot, memory included", TIMEOUT, async () => {
    await pyro.execWorkspace(id, ["sh", "-c", "echo checkpoint > state.txt; echo in-tmp > /tmp/volatile"]);
    await pyro.createSnapshot(id, "checkpoint");
    assert.deepEqual(
      (await pyro.listSnapshots(id)).snapshots.map((s) => s.name),
      ["baseline", "checkpoint"],
    );
    await pyro.writeWorkspaceFile(id, "state.txt", "later\n");

    const toCheckpoint = await pyro.resetWorkspace(id, { snapshot: "checkpoint" });
    assert.equal(toCheckpoint.start_mode, "snapshot_restore");
    assert.equal((await pyro.readWorkspaceFile(id, "state.txt")).content, "checkpoint\n");
    const tmp = await pyro.execWorkspace(id, ["cat", "/tmp/volatile"]);
    assert.equal(tmp.stdout, "in-tmp\n", "the snapshot holds memory too (tmpfs survived)");
    await assert.rejects(pyro.deleteSnapshot(id, "checkpoint"), (e) => isPyroError(e, "INVALID_ARGUMENT") && /base of the current disk/.test(e.message));

    const toBaseline = await pyro.resetWorkspace(id);
    assert.equal(toBaseline.snapshot, "baseline");
    // The baseline of a workspace created from the boot template is that template (reset = create's path).
    assert.equal(toBaseline.start_mode, "template_restore");
    assert.equal((await pyro.readWorkspaceFile(id, "README.md")).content, "demo\n");
    await assert.rejects(pyro.readWorkspaceFile(id, "state.txt"));
    assert.equal((await pyro.diffWorkspace(id)).changed, false);
    await pyro.deleteSnapshot(id, "checkpoint");
    await assert.rejects(pyro.deleteSnapshot(id, "baseline"), (e) => isPyroError(e, "INVALID_ARGUMENT"));
    await assert.rejects(pyro.resetWorkspace(id, { snapshot: "nope" }), (e) => isPyroError(e, "SNAPSHOT_NOT_FOUND"));
    // Command history is kept across resets: nothing the agent did is lost from the record.
    assert.ok((await pyro.logsWorkspace(id)).count >= 3);
    const summary = await pyro.summarizeWorkspace(id);
    assert.equal(summary.changes?.added, 0);
    assert.deepEqual(summary.snapshots, ["baseline"]);
  });
});
