import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import type { Pyro } from "../../src/sdk/pyro.js";

export const MIB = 1024 * 1024;

/** The VMM's PSS in bytes, from /proc/<pid>/smaps_rollup. */
export async function pssOf(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

/** Polls until `ok(pss)` or the deadline; returns the last reading. */
export async function pssWhen(pid: number, ok: (pss: number) => boolean, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let pss = await pssOf(pid);
  while (!ok(pss) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    pss = await pssOf(pid);
  }
  return pss;
}

/**
 * A guest process allocates `mib` MiB and holds it, then is killed: asserts that the VMM's PSS
 * rises by about that much and falls back by most of it within 10 s (free page reporting).
 */
export async function assertFreedMemoryReturns(pyro: Pyro, workspaceId: string, pid: number, mib: number): Promise<void> {
  // The guest reports what it never used (or freed after the restore) too: wait until that settles.
  let settled = await pssOf(pid);
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const now = await pssOf(pid);
    if (Math.abs(now - settled) < 8 * MIB) break;
    settled = now;
  }
  const hold = `import os, time; b = bytearray(b'\\x01') * (${mib} << 20); open('/tmp/held', 'w').write(str(os.getpid())); time.sleep(600)`;
  await pyro.execWorkspace(workspaceId, ["sh", "-c", `nohup python3 -c "${hold}" >/dev/null 2>&1 &`]);
  await pyro.execWorkspace(workspaceId, ["sh", "-c", "for i in $(seq 600); do [ -s /tmp/held ] && exit 0; sleep 0.1; done; exit 1"]);
  const held = await pssWhen(pid, (pss) => pss > settled + (mib - 50) * MIB, 5_000);
  assert.ok(held > settled + (mib - 50) * MIB, `PSS ${held / MIB} MiB while holding ${mib} MiB, ${settled / MIB} MiB before`);
  const freedAt = Date.now();
  await pyro.execWorkspace(workspaceId, ["sh", "-c", "kill $(cat /tmp/held)"]);
  const back = await pssWhen(pid, (pss) => pss < held - (mib - 100) * MIB, 10_000);
  const seconds = (Date.now() - freedAt) / 1000;
  console.log(
    `PSS: settled ${Math.round(settled / MIB)} MiB, holding ${Math.round(held / MIB)} MiB, ${seconds.toFixed(1)} s after the free ${Math.round(back / MIB)} MiB`,
  );
  assert.ok(back < held - (mib - 100) * MIB, `PSS still ${back / MIB} MiB ${seconds} s after freeing (was ${held / MIB} MiB)`);
}
