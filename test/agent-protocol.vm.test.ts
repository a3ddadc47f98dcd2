import assert from "node:assert/strict";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { AgentClient } from "../src/guest-protocol/agent-client.js";
import { capturedText } from "../src/guest-protocol/messages.js";
import { encodeFrame, FrameDecoder, FRAME_MAGIC } from "../src/guest-protocol/frame-codec.js";
import type { RunningVm } from "../src/runtime/vmm-backend.js";
import { launchDisposableVm } from "../src/vm-run/disposable-vm.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 120_000 };

describe("[vm] guest agent protocol against a real guest", () => {
  let vm: RunningVm;
  let agent: AgentClient;

  before(async () => {
    vm = await launchDisposableVm(testPaths, "debian:12", { vcpuCount: 1, memMib: 512, network: false });
    agent = vm.agent;
  });
  after(async () => {
    await vm?.dispose();
  });

  it("rejects malformed frames without dying, and serves a new connection afterwards", TIMEOUT, async () => {
    agent.close();
    const socketPath = join(vm.runDir, "agent.sock");
    const raw = connect(socketPath);
    await new Promise<void>((r, j) => raw.once("connect", () => r()).once("error", j));
    const decoder = new FrameDecoder();
    const replies: Record<string, unknown>[] = [];
    raw.on("data", (d: Buffer) => {
      decoder.push(d);
      for (let i = decoder.next(); i; i = decoder.next()) if (i.kind === "frame") replies.push(i.header);
    });
    const badLength = Buffer.concat([FRAME_MAGIC, Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])]);
    const badJson = Buffer.concat([FRAME_MAGIC, Buffer.from([0, 0, 0, 5, 0, 0, 0, 0]), Buffer.from("{nope")]);
    raw.write(Buffer.concat([Buffer.from("garbage before any frame"), badLength, badJson]));
    raw.write(encodeFrame({ op: "hello" })); // no id
    // A hello starts a host session (replies to requests of an earlier one are dropped), so it comes first.
    raw.write(encodeFrame({ id: 9, op: "hello" }));
    raw.write(encodeFrame({ id: 7, op: "no-such-op" }));
    raw.write(encodeFrame({ id: 8, op: "exec", argv: "not-an-array" }));
    const deadline = Date.now() + 20_000;
    // Requests are served concurrently: wait for every answer, not just the last one sent.
    const answered = () => [7, 8, 9].every((id) => replies.some((r) => r.id === id));
    while (!answered() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    raw.destroy();
    const errorsFor = (id: number) => replies.filter((r) => r.id === id && r.ok === false).map((r) => (r.error as { code: string }).code);
    assert.ok(errorsFor(0).includes("bad_frame"), JSON.stringify(replies));
    assert.ok(errorsFor(0).includes("bad_request"), JSON.stringify(replies));
    assert.deepEqual(errorsFor(7), ["unknown_op"]);
    assert.deepEqual(errorsFor(8), ["bad_request"]);
    assert.equal(replies.find((r) => r.id === 9)?.ok, true);

    // The agent survives the host disconnecting (G6): a fresh client works.
    agent = await AgentClient.connect(socketPath, Date.now() + 10_000);
    await agent.waitReady(Date.now() + 20_000);
    const r = await agent.exec({ command: ["echo", "still here"] });
    assert.equal(r.stdout.bytes.toString(), "still here\n");
  });

  it("writes, reads, stats and lists files, binary-safe", TIMEOUT, async () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await agent.writeFile("/tmp/pyro-test/deep/dir/blob.bin", binary, { mode: 0o600 });
    const read = await agent.readFile("/tmp/pyro-test/deep/dir/blob.bin");
    assert.deepEqual([...read.data], [...binary]);
    assert.equal(read.truncated, false);
    const partial = await agent.readFile("/tmp/pyro-test/deep/dir/blob.bin", { offset: 10, maxBytes: 5 });
    assert.deepEqual([...partial.data], [10, 11, 12, 13, 14]);
    assert.equal(partial.truncated, true);
    const st = await agent.stat("/tmp/pyro-test/deep/dir/blob.bin");
    assert.equal(st.type, "file");
    assert.equal(st.size, 256);
    assert.equal(st.mode, 0o600);
    const listing = await agent.list("/tmp/pyro-test", { recursive: true });
    assert.deepEqual(listing.entries.map((e) => `${e.type}:${e.path}`).sort(), [
      "directory:/tmp/pyro-test/deep",
      "directory:/tmp/pyro-test/deep/dir",
      "file:/tmp/pyro-test/deep/dir/blob.bin",
    ]);
    await assert.rejects(agent.readFile("/tmp/pyro-test/missing"), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && e.details.guestCode === "not_found");
    // An append continues a file and never creates one (a late chunk must not revive removed staging).
    await agent.writeFile("/tmp/pyro-test/deep/dir/blob.bin", Buffer.from([7]), { append: true });
    assert.equal((await agent.stat("/tmp/pyro-test/deep/dir/blob.bin")).size, 257);
    await assert.rejects(
      agent.writeFile("/tmp/pyro-test/appended-only", "x", { append: true }),
      (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && e.details.guestCode === "not_found",
    );
    await assert.rejects(agent.readFile("relative/path"), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && e.details.guestCode === "bad_request");
    await assert.rejects(agent.readFile("/tmp/pyro-test"), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && e.details.guestCode === "is_a_directory");
  });

  it("serves quick requests while a long command runs", TIMEOUT, async () => {
    const long = agent.exec({ command: ["sleep", "3"] });
    const started = Date.now();
    await agent.hello();
    await agent.stat("/etc/hostname");
    assert.ok(Date.now() - started < 2_500, "quick requests were not blocked by the running command");
    assert.equal((await long).exitCode, 0);
  });

  it("reaps orphaned children (PID 1 duty) and kills stray background output holders", TIMEOUT, async () => {
    // Each orphan exits right away; without reaping they would pile up as zombies.
    await agent.exec({ command: "for i in $(seq 20); do (sleep 0.01 &) ; done; sleep 0.5" });
    const ps = await agent.exec({ command: "ps -eo stat= | grep -c '^Z' || true" });
    assert.equal(ps.stdout.bytes.toString().trim(), "0");
    // A background child keeping stdout open must not hang the exec.
    const started = Date.now();
    const r = await agent.exec({ command: "echo fg; sleep 60 &" });
    assert.equal(r.stdout.bytes.toString(), "fg\n");
    assert.ok(Date.now() - started < 10_000);
  });

  it("distinguishes signals from exit codes", TIMEOUT, async () => {
    const r = await agent.exec({ command: "kill -TERM $$" });
    assert.equal(r.signal, 15);
    assert.equal(r.exitCode, 143);
  });

  it("sleeps while no host is connected (woken by the connect), and answers at once when one connects", TIMEOUT, async () => {
    const socketPath = join(vm.runDir, "agent.sock");
    // Wakeups of the agent's threads (voluntary context switches); exec threads come and go, so the sum
    // stays dominated by the long-lived ones, the host reader among them.
    const probe = "cat /proc/1/task/*/status | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'";
    const count = async () => Number(capturedText((await agent.exec({ command: ["sh", "-c", probe] })).stdout).trim());
    const before = await count();
    agent.close();
    await new Promise((r) => setTimeout(r, 3_000));
    const started = Date.now();
    agent = await AgentClient.connect(socketPath, Date.now() + 10_000);
    await agent.waitReady(Date.now() + 20_000);
    const connectMs = Date.now() - started;
    const woke = (await count()) - before;
    // Polling the port every 5 ms woke it ~600 times in these 3 s.
    assert.ok(woke < 150, `the agent woke ${woke} times in 3 s without a host`);
    assert.ok(connectMs < 2_000, `reconnect took ${connectMs} ms`);
  });

  it("an idle guest stops its timer tick (the CPU model lets the LAPIC timer go one-shot: nohz)", TIMEOUT, async () => {
    const r = await agent.exec({ command: ["sh", "-c", "grep -m1 nohz_mode /proc/timer_list; grep -m1 -A1 '^Tick Device' /proc/timer_list | tail -1"] });
    const out = capturedText(r.stdout);
    // 0 = periodic ticks forever (250 wakeups a second of every idle VM); 2 = high-resolution nohz.
    assert.match(out, /nohz_mode\s*:\s*[12]/, out);
  });

  it("shuts the guest down on request, and QEMU exits cleanly", TIMEOUT, async () => {
    await agent.writeFile("/root/kept.txt", "data");
    await agent.shutdown();
    const exit = await Promise.race([vm.exited, new Promise((r) => setTimeout(() => r("still running"), 30_000))]);
    assert.deepEqual(exit, { code: 0, signal: null });
  });
});
