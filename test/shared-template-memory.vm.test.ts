import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths } from "./helpers/vm-fixtures.js";

// Shared template memory is the default wherever /dev/shm is a tmpfs (this machine): no opt-in.
const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };
const MIB = 1024 * 1024;

/** kB fields of /proc/<pid>/smaps_rollup, in bytes. */
async function memoryOf(pid: number): Promise<{ rss: number; pss: number; privateDirty: number }> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) * 1024;
  return { rss: field("Rss"), pss: field("Pss"), privateDirty: field("Private_Dirty") };
}

describe("[vm] workspaces restored from a shared-memory template", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("map the template's RAM copy-on-write: they share its pages, yet each one's writes stay its own", TIMEOUT, async () => {
    const doctor = await pyro.doctor();
    assert.equal(doctor.boot_templates.memory, "shared_file", doctor.boot_templates.detail);
    const a = await pyro.createWorkspace("debian:12");
    created.push(a.workspace_id);
    const b = await pyro.createWorkspace("debian:12");
    created.push(b.workspace_id);
    for (const ws of [a, b]) {
      assert.equal(ws.vm?.start_mode, "template_restore");
      const cmdline = (await readFile(`/proc/${ws.vm!.pid}/cmdline`, "utf8")).split("\0");
      assert.ok(
        cmdline.some((arg) => arg.startsWith("memory-backend-file,") && arg.endsWith(",share=off")),
        cmdline.join(" "),
      );
      // Free page reporting beside the shared file only with private-ram-discard, which keeps QEMU from punching it.
      assert.ok(cmdline.includes("virtio-balloon-device,free-page-reporting=on"), cmdline.join(" "));
      const environ = (await readFile(`/proc/${ws.vm!.pid}/environ`, "utf8")).split("\0");
      assert.ok(
        environ.some((v) => v.startsWith("LD_PRELOAD=") && v.endsWith("libpyro_private_ram_discard.so")),
        "QEMU runs with private-ram-discard",
      );
    }
    // Unseeded, the diff baseline is the template's own /workspace (packed once, at the template's build).
    assert.equal((await pyro.diffWorkspace(a.workspace_id)).changed, false);
    await pyro.execWorkspace(a.workspace_id, ["sh", "-c", "echo new > /workspace/new.txt"]);
    assert.deepEqual(
      (await pyro.diffWorkspace(a.workspace_id)).files.map((f) => [f.path, f.status]),
      [["new.txt", "added"]],
    );
    // Both guests run and touch memory; the pages they only read stay the template's.
    for (const ws of [a, b]) await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "ls / >/dev/null; cat /etc/os-release >/dev/null"]);
    const guestRam = a.mem_mib * MIB;
    for (const ws of [a, b]) {
      const mem = await memoryOf(ws.vm!.pid);
      // A streamed restore writes all guest RAM into private memory (~1.06 GiB for a 1 GiB guest).
      assert.ok(mem.privateDirty < guestRam / 4, `private dirty ${mem.privateDirty / MIB} MiB for a ${a.mem_mib} MiB guest`);
      assert.ok(mem.pss < mem.rss, `PSS ${mem.pss / MIB} MiB is not below RSS ${mem.rss / MIB} MiB: nothing is shared`);
    }
    // Nothing reads every guest page at create (the baseline is the template); the file stays as small as the template's content.
    const ramFile = /mem-path=([^,]+)/.exec(
      (await readFile(`/proc/${a.vm!.pid}/cmdline`, "utf8")).split("\0").find((arg) => arg.startsWith("memory-backend-file,"))!,
    )![1]!;
    let allocated = Infinity;
    for (let i = 0; i < 50 && allocated >= guestRam / 2; i++) {
      await new Promise((r) => setTimeout(r, 200));
      allocated = (await stat(ramFile)).blocks * 512;
    }
    assert.ok(allocated < guestRam / 2, `the template RAM file holds ${allocated / MIB} MiB of a ${a.mem_mib} MiB guest`);
    // Guest memory (a tmpfs file) written in one VM is invisible to the other and to later copies.
    const mark = `secret-${process.pid}`;
    const wrote = await pyro.execWorkspace(a.workspace_id, ["sh", "-c", `echo ${mark} > /dev/shm/mark && cat /dev/shm/mark`]);
    assert.equal(wrote.stdout, `${mark}\n`);
    const other = await pyro.execWorkspace(b.workspace_id, ["sh", "-c", "cat /dev/shm/mark 2>/dev/null || echo absent"]);
    assert.equal(other.stdout, "absent\n");
    const c = await pyro.createWorkspace("debian:12");
    created.push(c.workspace_id);
    const later = await pyro.execWorkspace(c.workspace_id, ["sh", "-c", "cat /dev/shm/mark 2>/dev/null || echo absent"]);
    assert.equal(later.stdout, "absent\n");
    // The writer still sees its own write.
    assert.equal((await pyro.execWorkspace(a.workspace_id, ["cat", "/dev/shm/mark"])).stdout, `${mark}\n`);
  });

  it("the baseline is the template: create saves no memory, and reset to it is create's path (template memory, new overlay, the seed)", TIMEOUT, async () => {
    const seed = await mkdtemp(join(tmpdir(), "pyro-seed-"));
    await writeFile(join(seed, "README.md"), "seeded\n");
    const ws = await pyro.createWorkspace("debian:12", { seedPath: seed });
    created.push(ws.workspace_id);
    await rm(seed, { recursive: true, force: true });
    assert.equal(ws.vm?.start_mode, "template_restore");
    const dir = join(testPaths.stateDir, "workspaces", ws.workspace_id);
    const saved = async () => (await readdir(join(dir, "snapshots")).catch(() => [] as string[])).sort();
    assert.deepEqual(await saved(), [], "create saved a snapshot of the VM instead of naming the template");
    assert.deepEqual(ws.snapshots, ["baseline"]);
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo later > later.txt; echo changed > README.md; echo in-ram > /dev/shm/volatile"]);
    const reset = await pyro.resetWorkspace(ws.workspace_id);
    assert.equal(reset.start_mode, "template_restore");
    assert.ok(reset.reset_ms < 10_000, `reset took ${reset.reset_ms} ms`);
    assert.equal((await pyro.readWorkspaceFile(ws.workspace_id, "README.md")).content, "seeded\n");
    const after = await pyro.execWorkspace(ws.workspace_id, [
      "sh",
      "-c",
      "ls later.txt 2>/dev/null || echo no-later; cat /dev/shm/volatile 2>/dev/null || echo no-volatile",
    ]);
    assert.equal(after.stdout, "no-later\nno-volatile\n");
    assert.equal((await pyro.diffWorkspace(ws.workspace_id)).changed, false);
    // A later snapshot holds memory and disk, and resets to it still work beside the template baseline.
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo kept > kept.txt; echo mem > /dev/shm/volatile"]);
    await pyro.createSnapshot(ws.workspace_id, "point");
    assert.deepEqual(await saved(), ["point"]);
    // Its memory is a RAM file beside a device-only state (not all RAM streamed into the state), owner-only.
    const point = join(dir, "snapshots", "point");
    const state = await stat(join(point, "state.bin"));
    assert.ok(state.size < 1024 * 1024, `the snapshot state holds ${state.size} bytes: RAM was streamed into it`);
    const ram = await stat(join(point, "memory.ram"));
    assert.equal(ram.size, ws.mem_mib * MIB);
    assert.equal(ram.mode & 0o777, 0o600);
    await pyro.resetWorkspace(ws.workspace_id);
    const back = await pyro.resetWorkspace(ws.workspace_id, { snapshot: "point" });
    assert.equal(back.start_mode, "snapshot_restore");
    assert.equal((await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "cat kept.txt /dev/shm/volatile"])).stdout, "kept\nmem\n");
    // The reset maps that file copy-on-write: it stays as it was saved, for the next reset.
    const pid = (await pyro.statusWorkspace(ws.workspace_id)).vm!.pid;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    assert.ok(
      cmdline.some((arg) => arg.includes(`mem-path=${join(point, "memory.ram")},`) && arg.endsWith(",share=off")),
      cmdline.join(" "),
    );
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo second > /dev/shm/volatile"]);
    await pyro.resetWorkspace(ws.workspace_id, { snapshot: "point" });
    assert.equal((await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "cat /dev/shm/volatile"])).stdout, "mem\n");
  });

  it("every copy of one template is its own machine: RNG, clock, hostname and machine-id", TIMEOUT, async () => {
    const probe = "cat /proc/sys/kernel/random/uuid; od -An -N16 -tx1 /dev/urandom | tr -d ' \\n'; echo; date +%s; hostname; cat /etc/machine-id";
    const seen: { uuid: string; random: string; hostname: string; machineId: string }[] = [];
    for (let i = 0; i < 2; i++) {
      const ws = await pyro.createWorkspace("debian:12");
      created.push(ws.workspace_id);
      assert.equal(ws.vm?.start_mode, "template_restore");
      const before = Date.now() / 1000;
      const r = await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", probe]);
      const afterExec = Date.now() / 1000;
      const [uuid, random, date, hostname, machineId] = r.stdout.trim().split("\n");
      const guestNow = Number(date);
      assert.ok(guestNow >= Math.floor(before) - 2 && guestNow <= afterExec + 2, `guest clock ${guestNow}, host ${before}..${afterExec}`);
      assert.equal(hostname, ws.workspace_id);
      assert.match(machineId!, /^[0-9a-f]{32}$/);
      seen.push({ uuid: uuid!, random: random!, hostname: hostname!, machineId: machineId! });
    }
    const [a, b] = seen as [(typeof seen)[0], (typeof seen)[0]];
    assert.notEqual(a.uuid, b.uuid);
    assert.notEqual(a.random, b.random);
    assert.notEqual(a.machineId, b.machineId);
    // One-shot runs restore the same kind of template: each gets its own RNG state too.
    const runs = [];
    for (let i = 0; i < 2; i++)
      runs.push((await pyro.run("debian:12", ["sh", "-c", "cat /proc/sys/kernel/random/uuid; od -An -N16 -tx1 /dev/urandom"])).stdout);
    assert.notEqual(runs[0], runs[1]);
  });
});
