/**
 * fs.freeze against a real guest: /workspace frozen holds its writers and leaves a clean filesystem
 * on the host's disk; the freeze never outlives the host that asked for it (thaw, its connection
 * closing, the agent's cap), and the frozen-moment copy export and diff use keeps the guest running.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentClient } from "../src/guest-protocol/agent-client.js";
import { encodeFrame, FrameDecoder } from "../src/guest-protocol/frame-codec.js";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 180_000 };
const pyro = new Pyro();

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([promise.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
}

const writeCommand = (name: string) => ({ command: ["sh", "-c", `echo written > /workspace/${name}`], timeoutMs: 60_000 });

/** The ext4 superblock's feature list of the disk whose top layer is `top` (backing chain in place). */
function superblockFeatures(top: string, scratch: string): string {
  const raw = join(scratch, "disk.raw");
  const converted = spawnSync("qemu-img", ["convert", "-U", "-O", "raw", top, raw], { encoding: "utf8" });
  assert.equal(converted.status, 0, converted.stderr);
  const dumped = spawnSync("dumpe2fs", ["-h", raw], { encoding: "utf8" });
  assert.equal(dumped.status, 0, dumped.stderr);
  return dumped.stdout.split("\n").find((l) => l.startsWith("Filesystem features:")) ?? "";
}

describe("[vm] fs.freeze: /workspace frozen only while the host that asked holds it", () => {
  let id: string;
  let runDir: string;
  let scratch: string;
  const connectAgent = async () => {
    const agent = await AgentClient.connect(join(runDir, "agent.sock"), Date.now() + 10_000);
    await agent.waitReady(Date.now() + 20_000);
    return agent;
  };

  before(async () => {
    id = (await pyro.createWorkspace("debian:12")).workspace_id;
    runDir = join(testPaths.runtimeDir, id);
    scratch = await mkdtemp(join(tmpdir(), "pyro-freeze-"));
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("holds the guest's writers, leaves a clean filesystem on the host's disk, and thaw lets them go", TIMEOUT, async () => {
    const agent = await connectAgent();
    try {
      // Dirty the journal first: a committed but not checkpointed write marks the disk needs_recovery.
      assert.equal((await agent.exec({ command: ["sh", "-c", "seq 1 5000 > /workspace/before && sync"], timeoutMs: 60_000 })).exitCode, 0);
      const freeze = await agent.freezeWorkspace();
      assert.ok(freeze.holdMs >= 1_000 && freeze.holdMs <= 60_000, `hold ${freeze.holdMs} ms`);
      const blocked = agent.exec(writeCommand("during"));
      assert.equal(await settlesWithin(blocked, 1_500), false, "a write to /workspace finished while it was frozen");
      // Reads and the rest of the guest go on.
      assert.equal((await agent.exec({ command: ["wc", "-l", "/workspace/before"], timeoutMs: 30_000 })).exitCode, 0);
      const top = join(scratch, "top.qcow2");
      assert.equal(spawnSync("cp", ["--sparse=always", join(testPaths.stateDir, "workspaces", id, "workspace.qcow2"), top]).status, 0);
      const features = superblockFeatures(top, scratch);
      assert.match(features, /has_journal/);
      assert.doesNotMatch(features, /needs_recovery/, "the frozen disk still needs its journal replayed");
      assert.deepEqual(await agent.thawWorkspace(freeze.token), { held: true });
      assert.equal((await blocked).exitCode, 0);
      // A second thaw of the same freeze is a no-op that says so.
      assert.deepEqual(await agent.thawWorkspace(freeze.token), { held: false });
    } finally {
      agent.close();
    }
  });

  it("refuses a second freeze while one is held", TIMEOUT, async () => {
    const agent = await connectAgent();
    try {
      const freeze = await agent.freezeWorkspace();
      await assert.rejects(agent.freezeWorkspace(), (e: { code: string; details: { guestCode: string } }) => e.details.guestCode === "busy");
      assert.deepEqual(await agent.thawWorkspace(freeze.token), { held: true });
    } finally {
      agent.close();
    }
  });

  it("ends when the connection that asked for it closes, with no new host to thaw it", TIMEOUT, async () => {
    const agent = await connectAgent();
    await agent.freezeWorkspace();
    agent.close();
    const closedAt = Date.now();
    // The guest learns of the close from its port reading EOF; a host that reconnects within the
    // same instant can hide it (virtio-serial reports only the port's latest state), and any real
    // host says hello first, which thaws as well. Here the next host comes a moment later and stays silent.
    await new Promise((r) => setTimeout(r, 500));
    // A raw connection with no hello: a new host session would thaw too, and this must not rely on one.
    const raw = connect(join(runDir, "agent.sock"));
    await new Promise<void>((r, j) => raw.once("connect", () => r()).once("error", j));
    const decoder = new FrameDecoder();
    const replied = new Promise<Record<string, unknown>>((resolve) =>
      raw.on("data", (d: Buffer) => {
        decoder.push(d);
        for (let item = decoder.next(); item; item = decoder.next()) if (item.kind === "frame" && item.header.id === 41) resolve(item.header);
      }),
    );
    const { command, timeoutMs } = writeCommand("after-close");
    raw.write(encodeFrame({ id: 41, op: "exec", argv: command, cwd: "/", env: {}, max_output_bytes: 4096, timeout_ms: timeoutMs }));
    const reply = await replied;
    raw.destroy();
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal(reply.exit_code, 0, JSON.stringify(reply));
    // Well inside the agent's cap (10 s): it was the closed connection that thawed it.
    assert.ok(Date.now() - closedAt < 5_000, `the write waited ${Date.now() - closedAt} ms after the freezing host left`);
  });

  it("ends after the hold the host asked for even while its connection stays open", TIMEOUT, async () => {
    const agent = await connectAgent();
    try {
      const freeze = await agent.freezeWorkspace({ holdMs: 1_500 });
      assert.equal(freeze.holdMs, 1_500);
      const started = Date.now();
      assert.equal((await agent.exec(writeCommand("after-cap"))).exitCode, 0);
      assert.ok(Date.now() - started >= 1_000, "the write did not wait for the freeze");
      assert.deepEqual(await agent.thawWorkspace(freeze.token), { held: false }, "the freeze outlived its hold");
    } finally {
      agent.close();
    }
  });

  it("a guest that froze /workspace itself: export still takes its moment (paused), and leaves the guest's freeze alone", TIMEOUT, async () => {
    assert.equal((await pyro.execWorkspace(id, ["sh", "-c", "echo mine > /workspace/guest-frozen && fsfreeze -f /workspace"])).exit_code, 0);
    try {
      const out = join(scratch, "guest-frozen.tar");
      await pyro.exportWorkspace(id, ".", out);
      const listed = spawnSync("tar", ["-xOf", out, "./guest-frozen"], { encoding: "utf8" });
      assert.equal(listed.stdout, "mine\n", listed.stderr);
      // Still frozen: pyro thaws only a freeze it made.
      const agent = await connectAgent();
      try {
        assert.equal(await settlesWithin(agent.exec(writeCommand("still-frozen")), 1_500), false, "pyro thawed the guest's own freeze");
      } finally {
        agent.close();
      }
    } finally {
      assert.equal((await pyro.execWorkspace(id, ["fsfreeze", "-u", "/workspace"])).exit_code, 0);
    }
  });

  it("caps a host's hold at the agent's own limit", TIMEOUT, async () => {
    const agent = await connectAgent();
    try {
      const freeze = await agent.freezeWorkspace({ holdMs: 3_600_000 });
      assert.ok(freeze.holdMs <= 60_000, `the agent granted ${freeze.holdMs} ms`);
      await agent.thawWorkspace(freeze.token);
    } finally {
      agent.close();
    }
  });
});
