import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";

// Shared template memory is opt-in (see boot-templates.ts): this file tests that mode.
process.env.PYRO_TEMPLATE_MEMORY = "shared";
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
      assert.ok(cmdline.some((arg) => arg.startsWith("memory-backend-file,") && arg.endsWith(",share=off")), cmdline.join(" "));
    }
    // Both guests run and touch memory; the pages they only read stay the template's.
    for (const ws of [a, b]) await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "ls / >/dev/null; cat /etc/os-release >/dev/null"]);
    const guestRam = a.mem_mib * MIB;
    for (const ws of [a, b]) {
      const mem = await memoryOf(ws.vm!.pid);
      // A streamed restore writes all guest RAM into private memory (~1.06 GiB for a 1 GiB guest).
      assert.ok(mem.privateDirty < guestRam / 4, `private dirty ${mem.privateDirty / MIB} MiB for a ${a.mem_mib} MiB guest`);
      assert.ok(mem.pss < mem.rss, `PSS ${mem.pss / MIB} MiB is not below RSS ${mem.rss / MIB} MiB: nothing is shared`);
    }
    // The baseline snapshots read every guest page; the template file must not keep them as zeros.
    const ramFile = /mem-path=([^,]+)/.exec((await readFile(`/proc/${a.vm!.pid}/cmdline`, "utf8")).split("\0").find((arg) => arg.startsWith("memory-backend-file,"))!)![1]!;
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
});
