import { open, readFile, rm, writeFile } from "node:fs/promises";
import { PyroError } from "../../errors.js";
import { PRIVATE_FILE_MODE } from "../../storage/private-storage.js";
import type { QmpClient } from "./qmp-client.js";

/**
 * A paused VM's device state (CPU registers, devices, no RAM) in a file that restores exactly as a
 * template state does: `-incoming defer`, x-ignore-shared on, `migrate-incoming` of the file, with
 * the RAM mapped from a file beside it.
 *
 * QEMU 7.2 writes device state alone with `xen-save-devices-state` (any accelerator), but that stream
 * lacks the configuration section a non-Xen machine's loader requires ("Configuration section
 * missing"), and `xen-load-devices-state` asserts in its cleanup on such a machine. So the stream
 * gets the section a migration would have written, naming the machine and the x-ignore-shared
 * capability (the restore side turns it on, and the loader checks the two agree), and the
 * vmdescription trailer the loader looks for after the last section.
 */

/** QEMU's name for the machine type (what a migration stream's configuration section carries). */
const MACHINE_TYPE = "microvm";
const FILE_MAGIC = Buffer.from("QEVM\0\0\0\x03", "latin1");
const SECTION_CONFIGURATION = 0x07;
const SUBSECTION = 0x05;
const SECTION_VMDESCRIPTION = 0x06;
const CAPABILITIES_SUBSECTION = "configuration/capabilities";
const IGNORE_SHARED = "x-ignore-shared";

/** The bytes a migration with x-ignore-shared on writes between the file header and its first section. */
export function configurationSection(machine = MACHINE_TYPE, capabilities = [IGNORE_SHARED]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const shortString = (s: string) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
  parts.push(Buffer.from([SECTION_CONFIGURATION]), u32(Buffer.byteLength(machine)), Buffer.from(machine));
  parts.push(Buffer.from([SUBSECTION]), shortString(CAPABILITIES_SUBSECTION), u32(1), u32(capabilities.length));
  for (const capability of capabilities) parts.push(shortString(capability));
  return Buffer.concat(parts);
}

/** An empty vmdescription (type, be32 length 0): read and skipped by the loader. */
const EMPTY_VMDESCRIPTION = Buffer.from([SECTION_VMDESCRIPTION, 0, 0, 0, 0]);

/** Turns what xen-save-devices-state wrote into a stream a RAM-file restore loads. */
export function restorableDeviceState(raw: Buffer): Buffer {
  if (raw.length < FILE_MAGIC.length || !raw.subarray(0, FILE_MAGIC.length).equals(FILE_MAGIC)) {
    throw new PyroError("HOST_COMMAND_FAILED", "QEMU wrote a device state without the migration file header");
  }
  return Buffer.concat([raw.subarray(0, FILE_MAGIC.length), configurationSection(), raw.subarray(FILE_MAGIC.length), EMPTY_VMDESCRIPTION]);
}

/** Saves the devices of a paused VM to `path` (owner-only: CPU registers can hold key material). */
export async function saveDeviceState(qmp: QmpClient, path: string): Promise<void> {
  const raw = `${path}.raw`;
  await rm(raw, { force: true });
  // Created first, owner-only: QEMU opens the path it is given with the mode it has.
  await (await open(raw, "wx", PRIVATE_FILE_MODE)).close();
  try {
    await qmp.execute("xen-save-devices-state", { filename: raw, live: false });
    await writeFile(path, restorableDeviceState(await readFile(raw)), { mode: PRIVATE_FILE_MODE });
  } finally {
    await rm(raw, { force: true });
  }
}
