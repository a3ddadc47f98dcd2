import { join } from "node:path";
import type { Accelerator, VmLaunchSpec } from "../vmm-backend.js";
import { PyroError } from "../../errors.js";
import { shellQuote } from "../../process/shell-quote.js";

/** Files a QEMU guest uses inside its run directory. */
export function runFiles(runDir: string) {
  return {
    agentSocket: join(runDir, "agent.sock"),
    qmpSocket: join(runDir, "qmp.sock"),
    console: join(runDir, "console.log"),
    stderr: join(runDir, "qemu.stderr"),
    /** The egress server's listening socket (guest connections arrive here through socat). */
    egressSocket: join(runDir, "egress.sock"),
    /** Served by QEMU; the egress server holds a connection to it and exits when QEMU is gone. */
    egressLifeline: join(runDir, "egress-life.sock"),
    egressLog: join(runDir, "egress.log"),
  };
}

/**
 * The guest serial console. It is a file while the guest boots (the boot-failure messages must
 * outlive a QEMU that powered off), then QEMU is switched to an in-memory ring of this size, so a
 * guest writing to /dev/ttyS0 forever costs a bounded amount of host memory and no disk, with or
 * without a pyro process watching (runDir/console.log stops growing at that point).
 */
export const CONSOLE_CHARDEV_ID = "console";
export const CONSOLE_RING_BYTES = 1024 * 1024;

/** Where guests reach the egress proxy (inside slirp's 10.0.2.0/24). */
export const EGRESS_PROXY_ADDRESS = "10.0.2.100";
export const EGRESS_PROXY_PORT = 3128;

/** Characters a path may hold to pass unquoted through slirp's command split, QEMU's option commas and socat's address syntax. */
const FORWARDER_SAFE_PATH = /^[A-Za-z0-9._/+-]+$/;

/**
 * What QEMU runs for each guest connection to the proxy address: socat joining the connection (its
 * stdin/stdout) to the VM's egress server. About 1 MiB of private memory, where a Node process per
 * connection cost about 48 MiB RSS. Its own diagnostics go to /dev/null, not into the guest's stream.
 * `-t 2`: once either side has closed, socat lingers at most 2 s for the other, so a connection the
 * proxy refused or finished frees its process even if the guest never closes its end (a client that
 * half-closes after its request gets 2 s for the answer; HTTP clients do not half-close).
 */
export function guestConnectionForwarder(socat: string, egressSocket: string): string[] {
  for (const path of [socat, egressSocket]) {
    if (!FORWARDER_SAFE_PATH.test(path)) {
      throw new PyroError(
        "INVALID_ARGUMENT",
        `guest networking needs paths made of letters, digits and ._/+- only, but '${path}' has others (set PYRO_RUNTIME_DIR to such a directory)`,
      );
    }
  }
  return [socat, "-t", "2", "-lf", "/dev/null", "STDIO", `UNIX-CONNECT:${egressSocket}`];
}

/**
 * The id of an explicit RAM backend: QEMU's own name for microvm's RAM, so a saved state streams
 * into a VM whether or not its RAM is a file (the RAM block keeps its name either way).
 */
const RAM_BACKEND_ID = "microvm.ram";

/** The /workspace disk's virtio serial; the agent finds the disk by it (guest/agent/src/workspace_disk.rs). */
export const WORKSPACE_DISK_SERIAL = "pyro-workspace";

/**
 * TCG's translated-code buffer, in MiB. QEMU 7.2's default is 1 GiB, and its pages stay resident at
 * their high-water mark, so a VM that once ran a big build would keep up to 1 GiB of host memory
 * however idle it is afterwards. A boot plus everyday commands translates well under 32 MiB
 * (runtime-facts: tb-size=32 barely changes an idle guest's RSS); 64 leaves room for compilers and
 * interpreters before a full flush (then retranslation) costs time, and caps each VM's share at 64 MiB.
 */
export const TCG_TRANSLATION_CACHE_MIB = 64;

/**
 * x86-64-v2 on qemu64 boots faster under TCG than `-cpu max` (runtime-facts 1h). `+arat` (the local
 * APIC timer keeps running in deep C-states): without it Linux marks that timer C3STOP and, with no
 * HPET on microvm to broadcast, never leaves its periodic 250 Hz tick, so every idle guest kept
 * waking its VMM 250 times a second.
 */
const TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+arat";

/** Kernel command line. Values cannot contain spaces (G13). */
export function kernelCmdline(spec: VmLaunchSpec, accel: Accelerator, tscKhz: number | undefined): string {
  const words = [
    "console=ttyS0",
    "quiet",
    "panic=-1",
    "no_timer_check",
    "tsc=reliable",
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
    "edd=off",
    "cryptomgr.notests",
    `pyro.hostname=${spec.hostname}`,
  ];
  // microvm has no HPET/PM timer; under TCG the PIT calibration hangs ~10% of boots without this (G1).
  if (accel === "tcg" && tscKhz) words.push(`tsc_early_khz=${tscKhz}`);
  if (spec.network !== "none") words.push("pyro.net=1");
  if (spec.rootDisk.readOnly) words.push("pyro.rootflags=ro,noload");
  return words.join(" ");
}

/**
 * The QEMU microvm command line. Device set and order are fixed for a given spec shape, because a
 * saved VM state only restores into an identical machine (G10).
 */
export function buildQemuArgs(spec: VmLaunchSpec, accel: Accelerator, tscKhz: number | undefined, socat = "socat"): string[] {
  const files = runFiles(spec.runDir);
  const disk = spec.rootDisk;
  const args = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-M",
    spec.memoryFile ? `microvm,memory-backend=${RAM_BACKEND_ID}` : "microvm",
    "-m",
    String(spec.memMib),
    ...(spec.memoryFile ? ["-object", memoryFileBackend(spec.memoryFile, spec.memMib)] : []),
    "-smp",
    String(spec.vcpuCount),
    ...(accel === "kvm" ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", `tcg,thread=multi,tb-size=${TCG_TRANSLATION_CACHE_MIB}`, "-cpu", TCG_CPU]),
    "-kernel",
    spec.kernelPath,
    "-initrd",
    spec.initramfsPath,
    "-append",
    kernelCmdline(spec, accel, tscKhz),
    "-chardev",
    `file,id=${CONSOLE_CHARDEV_ID},path=${files.console}`,
    "-serial",
    `chardev:${CONSOLE_CHARDEV_ID}`,
    "-drive",
    `id=root,file=${disk.path},format=${disk.format},if=none,cache=${disk.cache}${disk.readOnly ? ",readonly=on" : ""}`,
    "-device",
    "virtio-blk-device,drive=root",
    ...(spec.workspaceDisk
      ? [
          "-drive",
          `id=workspace,file=${spec.workspaceDisk.path},format=${spec.workspaceDisk.format},if=none,cache=${spec.workspaceDisk.cache}`,
          "-device",
          `virtio-blk-device,drive=workspace,serial=${WORKSPACE_DISK_SERIAL}`,
        ]
      : []),
    "-device",
    "virtio-serial-device",
    "-chardev",
    `socket,id=agent,path=${files.agentSocket},server=on,wait=off`,
    "-device",
    "virtserialport,chardev=agent,name=org.pyro.agent",
    "-qmp",
    `unix:${files.qmpSocket},server=on,wait=off`,
  ];
  if (spec.network !== "none") {
    // restrict=on: no route, DNS or host-loopback access; only the guestfwd to the proxy and hostfwds.
    args.push("-chardev", `socket,id=egress-lifeline,path=${files.egressLifeline},server=on,wait=off`);
    const forwarder = guestConnectionForwarder(socat, files.egressSocket).join(" ");
    args.push(
      "-netdev",
      `user,id=net0,restrict=on,guestfwd=tcp:${EGRESS_PROXY_ADDRESS}:${EGRESS_PROXY_PORT}-cmd:${forwarder}`,
      "-device",
      "virtio-net-device,netdev=net0",
    );
  }
  // With a copy-on-write RAM file, the backend starts QEMU with private-ram-discard (or refuses).
  if (spec.freePageReporting) args.push("-device", "virtio-balloon-device,free-page-reporting=on");
  // A RAM-file restore loads its (device-only) state over QMP, after enabling x-ignore-shared.
  if (spec.incomingState) args.push("-incoming", spec.memoryFile ? "defer" : incomingStateUri(spec.incomingState));
  return args;
}

export function incomingStateUri(statePath: string): string {
  return `exec:cat ${shellQuote(statePath)}`;
}

/**
 * A RAM-file restore's device state reaches QEMU as this inherited descriptor (the file opened
 * read-only by pyro), loaded with `migrate-incoming fd:3`: through `exec:cat`, QEMU would fork a
 * shell and cat first, which cost each restore milliseconds.
 */
export const DEVICE_STATE_FD = 3;
export const DEVICE_STATE_URI = `fd:${DEVICE_STATE_FD}`;

function memoryFileBackend(file: { path: string; share: boolean }, memMib: number): string {
  // QEMU splits options at commas: a path holding one would change the options, not name a file.
  if (file.path.includes(",")) throw new PyroError("INVALID_ARGUMENT", `the VM memory file path '${file.path}' contains a comma`);
  return `memory-backend-file,id=${RAM_BACKEND_ID},size=${memMib}M,mem-path=${file.path},share=${file.share ? "on" : "off"}`;
}
