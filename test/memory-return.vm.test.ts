import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { assertFreedMemoryReturns } from "./helpers/guest-memory-return.js";

// Free page reporting is for VMs whose RAM is not a shared template file (see VmLaunchSpec.freePageReporting).
process.env.PYRO_TEMPLATE_MEMORY = "streamed";
const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };
const ALLOCATED_MIB = 500;

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
    await assertFreedMemoryReturns(pyro, ws.workspace_id, pid, ALLOCATED_MIB);
  });
});
