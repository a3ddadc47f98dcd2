import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { buildQemuArgs, kernelCmdline } from "../src/runtime/qemu/qemu-args.js";
import type { VmLaunchSpec } from "../src/runtime/vmm-backend.js";

const spec: VmLaunchSpec = {
  kernelPath: "/k/vmlinux",
  initramfsPath: "/k/initrd.cpio",
  rootDisk: { path: "/r/root.qcow2", format: "qcow2", cache: "unsafe" },
  vcpuCount: 2,
  memMib: 512,
  hostname: "pyro",
  network: "none",
  runDir: "/run/x",
  bootTimeoutMs: 1000,
  dieWithParent: true,
  ownsRunDir: true,
};

function valueAfter(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe("QEMU command line", () => {
  it("uses TCG with the fast CPU model and tsc_early_khz (runtime-facts G1)", () => {
    const args = buildQemuArgs(spec, "tcg", 2_596_146);
    assert.deepEqual(valueAfter(args, "-accel"), ["tcg,thread=multi,tb-size=64"]);
    assert.deepEqual(valueAfter(args, "-cpu"), ["qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+arat"]);
    assert.match(valueAfter(args, "-append")[0]!, /tsc_early_khz=2596146/);
    assert.deepEqual(valueAfter(args, "-M"), ["microvm"]);
  });

  it("uses KVM with the host CPU and no TSC override", () => {
    const args = buildQemuArgs(spec, "kvm", 2_596_146);
    assert.deepEqual(valueAfter(args, "-accel"), ["kvm"]);
    assert.deepEqual(valueAfter(args, "-cpu"), ["host"]);
    assert.doesNotMatch(valueAfter(args, "-append")[0]!, /tsc_early_khz/);
  });

  it("adds a NIC only when networking is asked for, with no direct route out (restrict=on)", () => {
    assert.equal(buildQemuArgs(spec, "tcg", 1).includes("-netdev"), false);
    const net = { egressServer: ["/usr/bin/node", "/p/egress-server.js", "--policy=/w/a,b.json"] };
    const withNet = buildQemuArgs({ ...spec, network: net }, "tcg", 1, "/usr/bin/socat");
    // Each guest connection runs a small socat joined to the VM's one egress server.
    assert.deepEqual(valueAfter(withNet, "-netdev"), [
      "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:/usr/bin/socat -t 2 -lf /dev/null STDIO UNIX-CONNECT:/run/x/egress.sock",
    ]);
    // The lifeline the egress server holds, served by QEMU so the server dies with it.
    assert.ok(valueAfter(withNet, "-chardev").includes("socket,id=egress-lifeline,path=/run/x/egress-life.sock,server=on,wait=off"));
    assert.match(kernelCmdline({ ...spec, network: net }, "tcg", 1), /pyro\.net=1/);
  });

  it("refuses paths the per-connection command line cannot carry unquoted", () => {
    const net = { egressServer: ["x"] };
    for (const runDir of ["/run/a b", "/run/a,b", "/run/a:b", "/run/a'b"]) {
      assert.throws(() => buildQemuArgs({ ...spec, runDir, network: net }, "tcg", 1), /letters, digits/, runDir);
    }
  });

  it("mounts read-only disks read-only, without journal replay (G4)", () => {
    const ro = { ...spec, rootDisk: { path: "/b.ext4", format: "raw" as const, cache: "writeback" as const, readOnly: true } };
    assert.match(valueAfter(buildQemuArgs(ro, "tcg", 1), "-drive")[0]!, /format=raw.*readonly=on/);
    assert.match(kernelCmdline(ro, "tcg", 1), /pyro\.rootflags=ro,noload/);
  });

  it("attaches the /workspace disk after the root disk, under the serial the agent looks for", () => {
    const args = buildQemuArgs({ ...spec, workspaceDisk: { path: "/r/workspace.qcow2", format: "qcow2", cache: "writeback" } }, "tcg", 2_000_000);
    const devices = valueAfter(args, "-device").filter((d) => d.startsWith("virtio-blk-device"));
    assert.deepEqual(devices, ["virtio-blk-device,drive=root", "virtio-blk-device,drive=workspace,serial=pyro-workspace"]);
    assert.ok(valueAfter(args, "-drive").includes("id=workspace,file=/r/workspace.qcow2,format=qcow2,if=none,cache=writeback"));
    assert.equal(valueAfter(buildQemuArgs(spec, "tcg", 2_000_000), "-device").filter((d) => d.startsWith("virtio-blk-device")).length, 1);
  });

  it("keeps every kernel command line word free of spaces (G13)", () => {
    for (const word of kernelCmdline({ ...spec, network: { egressServer: ["x"] } }, "tcg", 1).split(" ")) assert.ok(word.length > 0);
  });

  it("puts the agent socket, QMP socket and console in the run directory", () => {
    const args = buildQemuArgs(spec, "tcg", 1).join(" ");
    assert.match(args, /path=\/run\/x\/agent\.sock/);
    assert.match(args, /unix:\/run\/x\/qmp\.sock/);
    assert.match(args, /-chardev file,id=console,path=\/run\/x\/console\.log -serial chardev:console/);
  });

  it("maps a template RAM file under microvm's own RAM name, and defers a device-only restore to QMP", () => {
    const template = buildQemuArgs({ ...spec, memoryFile: { path: "/dev/shm/p/t.ram", share: true } }, "tcg", 1);
    assert.equal(template[template.indexOf("-M") + 1], "microvm,memory-backend=microvm.ram");
    assert.ok(template.includes(`memory-backend-file,id=microvm.ram,size=${spec.memMib}M,mem-path=/dev/shm/p/t.ram,share=on`));
    assert.ok(!template.includes("-incoming"));
    const clone = buildQemuArgs({ ...spec, memoryFile: { path: "/dev/shm/p/t.ram", share: false }, incomingState: "/s/state.bin" }, "tcg", 1);
    assert.ok(clone.some((a) => a.endsWith(",share=off")));
    assert.equal(clone[clone.indexOf("-incoming") + 1], "defer");
    // Without a RAM file the state streams in on the command line, and the machine keeps its default RAM.
    const streamed = buildQemuArgs({ ...spec, incomingState: "/s/state.bin" }, "tcg", 1);
    assert.equal(streamed[streamed.indexOf("-M") + 1], "microvm");
    assert.equal(streamed[streamed.indexOf("-incoming") + 1], "exec:cat '/s/state.bin'");
  });

  it("refuses a RAM file path QEMU would split into options", () => {
    assert.throws(() => buildQemuArgs({ ...spec, memoryFile: { path: "/dev/shm/a,share=on", share: false } }, "tcg", 1), /comma/);
  });

  it("adds the free-page-reporting balloon only when asked (beside a copy-on-write RAM file too: the backend then preloads private-ram-discard)", () => {
    assert.equal(
      buildQemuArgs(spec, "tcg", 1).some((a) => a.includes("balloon")),
      false,
    );
    for (const memoryFile of [undefined, { path: "/dev/shm/p/t.ram", share: false }])
      assert.deepEqual(
        valueAfter(buildQemuArgs({ ...spec, freePageReporting: true, ...(memoryFile ? { memoryFile } : {}) }, "tcg", 1), "-device").filter((d) =>
          d.includes("balloon"),
        ),
        ["virtio-balloon-device,free-page-reporting=on"],
      );
  });
});
