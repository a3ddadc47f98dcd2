/**
 * exec's syncAfter, host side, without a VM: a unix socket server plays the agent. With an agent
 * that flushes before answering (`synced: true`) an exec is one round trip; with an agent older
 * than sync_after (no `synced`) the client still flushes, with a `sync` after the exec. The real
 * agent's flush is checked by workspace-exec-sync.vm.test.ts (a write survives a killed VMM).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentClient } from "../src/guest-protocol/agent-client.js";
import { encodeFrame, FrameDecoder } from "../src/guest-protocol/frame-codec.js";

const execReply = (id: unknown, extra: Record<string, unknown>) =>
  encodeFrame({
    id,
    ok: true,
    exit_code: 0,
    signal: null,
    timed_out: false,
    duration_ms: 1,
    stdout_len: 0,
    stdout_total: 0,
    stdout_head_len: 0,
    stderr_len: 0,
    stderr_total: 0,
    stderr_head_len: 0,
    ...extra,
  });

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "pyro-exec-sync-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An agent that records each request's op and fields; `flushes` says whether it knows sync_after. */
async function fakeAgent(name: string, flushes: boolean): Promise<{ client: AgentClient; server: Server; requests: Record<string, unknown>[] }> {
  const requests: Record<string, unknown>[] = [];
  const server = createServer((socket) => {
    const decoder = new FrameDecoder();
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      decoder.push(chunk);
      for (let item = decoder.next(); item; item = decoder.next()) {
        if (item.kind !== "frame") continue;
        const req = item.header;
        requests.push(req);
        if (req.op === "hello") socket.write(encodeFrame({ id: req.id, ok: true, protocol: 1, agent_version: "0.1.0", boot_ms: 1, uptime_ms: 2 }));
        else if (req.op === "exec") socket.write(execReply(req.id, flushes && req.sync_after === true ? { synced: true } : {}));
        else socket.write(encodeFrame({ id: req.id, ok: true }));
      }
    });
  });
  const socketPath = join(dir, `${name}.sock`);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const client = await AgentClient.connect(socketPath, Date.now() + 2_000);
  await client.hello();
  return { client, server, requests };
}

describe("exec with syncAfter", () => {
  it("asks the agent to flush before answering, in the exec itself: no separate sync", async () => {
    const { client, server, requests } = await fakeAgent("current", true);
    try {
      await client.exec({ command: ["true"], syncAfter: true });
      const ops = requests.map((r) => r.op);
      assert.deepEqual(ops, ["hello", "exec"]);
      assert.equal(requests[1]!.sync_after, true);
    } finally {
      client.close();
      server.close();
    }
  });

  it("still flushes through an agent that predates sync_after: a sync follows the exec", async () => {
    const { client, server, requests } = await fakeAgent("older", false);
    try {
      await client.exec({ command: ["true"], syncAfter: true });
      assert.deepEqual(
        requests.map((r) => r.op),
        ["hello", "exec", "sync"],
      );
    } finally {
      client.close();
      server.close();
    }
  });

  it("without syncAfter, neither asks for a flush nor sends a sync", async () => {
    const { client, server, requests } = await fakeAgent("plain", true);
    try {
      await client.exec({ command: ["true"] });
      assert.deepEqual(
        requests.map((r) => r.op),
        ["hello", "exec"],
      );
      assert.equal(requests[1]!.sync_after, undefined);
    } finally {
      client.close();
      server.close();
    }
  });
});
