import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { after, describe, it } from "node:test";
import { ZERO_PAGE_RELEASE_INTERVAL_MS } from "../src/runtime/qemu/qemu-backend.js";
import { Pyro } from "../src/sdk/pyro.js";
import { assertFreedMemoryReturns, MIB, pssOf, pssWhen } from "./helpers/guest-memory-return.js";
import { waitFor } from "./helpers/vm-fixtures.js";

// The default: template RAM is a shared file every workspace maps copy-on-write.
const pyro = new Pyro();
/**
 * A shape no other test file uses, so its template RAM file is this file's alone: a guest's first
 * write to a page the template never held allocates that page (as zeros) in the shared file, and
 * the 500 MiB written here would make another file's "the template stays small" check fail.
 */
const SHAPE = { memMib: 1280 };
const TIMEOUT = { timeout: 300_000 };
const ALLOCATED_MIB = 500;

/** The file QEMU maps as guest RAM (the template's), from its command line. */
async function ramFileOf(pid: number): Promise<string> {
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
  const backend = cmdline.find((arg) => arg.startsWith("memory-backend-file,"));
  assert.ok(backend?.endsWith(",share=off"), cmdline.join(" "));
  return /mem-path=([^,]+)/.exec(backend!)![1]!;
}

/** What a file holds in memory (its allocated blocks), not its size. */
async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

/** SHA-256 of a file's content (holes read as zeros without being allocated), and how much of it is not zeros. */
async function contentOf(path: string): Promise<{ hash: string; nonZeroBytes: number }> {
  const hash = createHash("sha256");
  const page = 4096;
  const zeros = Buffer.alloc(page);
  let nonZeroBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MIB })) {
    const bytes = chunk as Buffer;
    hash.update(bytes);
    for (let at = 0; at < bytes.length; at += page)
      if (!bytes.subarray(at, at + page).equals(zeros.subarray(0, Math.min(page, bytes.length - at)))) nonZeroBytes += page;
  }
  return { hash: hash.digest("hex"), nonZeroBytes };
}

describe("[vm] memory that goes back to the host, from VMs sharing one template's RAM", () => {
  const created: string[] = [];
  after(async () => {
    for (const id of created) await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it(`a guest that allocates and frees ${ALLOCATED_MIB} MiB gives it back, and the template every other VM maps keeps every byte`, TIMEOUT, async () => {
    const doctor = await pyro.doctor();
    assert.equal(doctor.boot_templates.memory, "shared_file", doctor.boot_templates.detail);
    assert.match(doctor.boot_templates.detail, /freed guest pages go back to the host/);
    const ws = await pyro.createWorkspace("debian:12", SHAPE);
    created.push(ws.workspace_id);
    const sibling = await pyro.createWorkspace("debian:12", SHAPE);
    created.push(sibling.workspace_id);
    const pid = ws.vm!.pid;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    assert.ok(cmdline.includes("virtio-balloon-device,free-page-reporting=on"), cmdline.join(" "));
    const environ = (await readFile(`/proc/${pid}/environ`, "utf8")).split("\0");
    assert.ok(
      environ.some((v) => /^LD_PRELOAD=.*libpyro_private_ram_discard\.so$/.test(v)),
      "QEMU runs with private-ram-discard",
    );
    const template = await ramFileOf(pid);
    assert.equal(await ramFileOf(sibling.vm!.pid), template, "both workspaces map the same template RAM file");
    const before = await contentOf(template);

    await assertFreedMemoryReturns(pyro, ws.workspace_id, pid, ALLOCATED_MIB);

    // QEMU alone would have punched every reported range out of the shared file, under the sibling.
    assert.equal((await contentOf(template)).hash, before.hash, "the shared template RAM file is unchanged");
    const sum = await pyro.execWorkspace(sibling.workspace_id, [
      "sh",
      "-c",
      "python3 -c 'print(sum(range(10**6)))' && sha256sum /usr/bin/ls >/dev/null && echo ok",
    ]);
    assert.equal(sum.stdout, "499999500000\nok\n");
    assert.equal((await pyro.execWorkspace(ws.workspace_id, ["sh", "-c", "echo alive"])).stdout, "alive\n");

    // Every page that guest touched was first allocated, as zeros, in the shared file (a kernel
    // effect); once its VM is gone, the zeros go back.
    const content = before.nonZeroBytes;
    const grown = await allocatedBytes(template);
    assert.ok(grown > content + 200 * MIB, `the template file holds ${grown / MIB} MiB for ${content / MIB} MiB of content`);
    const changed = (await stat(template)).ctimeMs;
    await new Promise((r) => setTimeout(r, Math.max(0, changed + ZERO_PAGE_RELEASE_INTERVAL_MS - Date.now())));
    await pyro.deleteWorkspace(ws.workspace_id);
    const shrunk = await waitFor(
      "the template file to give back the zero pages its deleted VM's guest touched",
      async () => {
        const now = await allocatedBytes(template);
        return now < content + 64 * MIB ? now : undefined;
      },
      15_000,
    );
    console.log(
      `template file: ${Math.round(content / MIB)} MiB of content, ${Math.round(grown / MIB)} MiB held, ${Math.round(shrunk / MIB)} MiB after its VM went`,
    );
    assert.equal((await contentOf(template)).hash, before.hash, "the template's content is unchanged by the release");
    assert.equal((await pyro.execWorkspace(sibling.workspace_id, ["sh", "-c", "sha256sum /usr/bin/ls >/dev/null && echo ok"])).stdout, "ok\n");
  });

  it("forks of one source share its RAM file: what one frees leaves it, and its siblings still read every byte", TIMEOUT, async () => {
    const source = await pyro.createWorkspace("debian:12", SHAPE);
    created.push(source.workspace_id);
    // 300 MiB of 0x01 in a guest tmpfs: RAM pages the fork's RAM file holds as data.
    const fill =
      "mkdir -p /mnt/blob && mount -t tmpfs -o size=400m blob /mnt/blob && python3 -c \"open('/mnt/blob/b', 'wb').write(b'\\x01' * (300 << 20))\" && sha256sum /mnt/blob/b";
    const expected = (await pyro.execWorkspace(source.workspace_id, ["sh", "-c", fill])).stdout.split(" ")[0];
    const forked = await pyro.forkWorkspace(source.workspace_id, { count: 2 });
    created.push(...forked.forks.map((f) => f.workspace_id));
    assert.equal(forked.memory, "mapped", JSON.stringify(forked));
    const [freeing, keeping] = forked.forks;
    const pid = freeing!.vm!.pid;
    const ramFile = await ramFileOf(pid);
    assert.equal(await ramFileOf(keeping!.vm!.pid), ramFile, "the two forks map one RAM file");
    // The fork reads the pages (now mapped in it), then frees them: they leave this VM, not the file.
    await pyro.execWorkspace(freeing!.workspace_id, ["sha256sum", "/mnt/blob/b"]);
    const held = await pssOf(pid);
    await pyro.execWorkspace(freeing!.workspace_id, ["rm", "/mnt/blob/b"]);
    const back = await pssWhen(pid, (pss) => pss < held - 200 * MIB, 10_000);
    console.log(`fork PSS: ${Math.round(held / MIB)} MiB holding, ${Math.round(back / MIB)} MiB after freeing`);
    assert.ok(back < held - 200 * MIB, `fork PSS still ${back / MIB} MiB after freeing (was ${held / MIB} MiB)`);
    // Without private-ram-discard, QEMU punches the freed ranges out of the RAM file: zeros here.
    assert.equal((await pyro.execWorkspace(keeping!.workspace_id, ["sha256sum", "/mnt/blob/b"])).stdout.split(" ")[0], expected);
  });
});
