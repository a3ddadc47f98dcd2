import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";

// Free page reporting is for VMs whose RAM is not a shared template file (see VmLaunchSpec.freePageReporting).
process.env.PYRO_TEMPLATE_MEMORY = "streamed";
const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };
const MIB = 1024 * 1024;
const ALLOCATED_MIB = 500;

async function pssOf(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

/** Polls until `ok(pss)` or the deadline; returns the last reading. */
async function pssWhen(pid: number, ok: (pss: number) => boolean, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let pss = await pssOf(pid);
  while (!ok(pss) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    pss = await pssOf(pid);
  }
  return pss;
}

describe("[vm] memory that goes back to the host", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it(`a guest that allocates and frees ${ALLOCATED_MIB} MiB gives it back within seconds (virtio-balloon free page reporting)`, TIMEOUT, async () => {
    const doctor = await pyro.doctor();
    assert.equal(doctor.boot_templates.memory, "streamed");
    const ws = await pyro.createWorkspace("debian:12");
    created.push(ws.workspace_id);
    const pid = ws.vm!.pid;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    assert.ok(cmdline.includes("virtio-balloon-device,free-page-reporting=on"), cmdline.join(" "));
    // The guest reports what it never used (or freed after the restore) too: wait until that settles.
    let settled = await pssOf(pid);
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const now = await pssOf(pid);
      if (Math.abs(now - settled) < 8 * MIB) break;
      settled = now;
    }
    const hold = `import os, time; b = bytearray(b'\\x01') * (${ALLOCATED_MIB} << 20); open('/tmp/held', 'w').write(str(os.getpid())); time.sleep(600)`;
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", `nohup python3 -c "${hold}" >/dev/null 2>&1 &`]);
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "for i in $(seq 600); do [ -s /tmp/held ] && exit 0; sleep 0.1; done; exit 1"]);
    const held = await pssWhen(pid, (pss) => pss > settled + (ALLOCATED_MIB - 50) * MIB, 5_000);
    assert.ok(held > settled + (ALLOCATED_MIB - 50) * MIB, `PSS ${held / MIB} MiB while holding ${ALLOCATED_MIB} MiB, ${settled / MIB} MiB before`);
    const freedAt = Date.now();
    await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "kill $(cat /tmp/held)"]);
    const back = await pssWhen(pid, (pss) => pss < held - (ALLOCATED_MIB - 100) * MIB, 10_000);
    const seconds = (Date.now() - freedAt) / 1000;
    console.log(
      `PSS: settled ${Math.round(settled / MIB)} MiB, holding ${Math.round(held / MIB)} MiB, ${seconds.toFixed(1)} s after the free ${Math.round(back / MIB)} MiB`,
    );
    assert.ok(back < held - (ALLOCATED_MIB - 100) * MIB, `PSS still ${back / MIB} MiB ${seconds} s after freeing (was ${held / MIB} MiB)`);
  });
});
