/**
 * exec's syncAfter, host side, without a VM: a unix socket server plays the agent. With an agent
 * that flushes before answering (`synced: true`) an exec is one round trip; with an agent older
 * than sync_after (no `synced`) the client still flushes, with a `sync` after the exec. The real
 * agent's flush is checked by workspace-exec-sync.vm.test.ts (a write survives a killed VMM).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AgentClient } from "../src/guest-protocol/agent-client.js";
import { encodeFrame } from "../src/guest-protocol/frame-codec.js";
import { fakeAgent, honestExec } from "./helpers/fake-agent.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "pyro-exec-sync-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An agent that records each request after its hello; `flushes` says whether it knows sync_after. */
async function recordingAgent(name: string, flushes: boolean): Promise<{ client: AgentClient; server: Server; requests: Record<string, unknown>[] }> {
  const requests: Record<string, unknown>[] = [];
  const { client, server } = await fakeAgent(join(dir, `${name}.sock`), (req, socket) => {
    requests.push(req);
    if (req.op === "exec") socket.write(honestExec(req.id, Buffer.alloc(0), flushes && req.sync_after === true ? { synced: true } : {}));
    else socket.write(encodeFrame({ id: req.id, ok: true }));
  });
  return { client, server, requests };
}

describe("exec with syncAfter", () => {
  it("asks the agent to flush before answering, in the exec itself: no separate sync", async () => {
    const { client, server, requests } = await recordingAgent("current", true);
    try {
      await client.exec({ command: ["true"], syncAfter: true });
      const ops = requests.map((r) => r.op);
      assert.deepEqual(ops, ["exec"]);
      assert.equal(requests[0]!.sync_after, true);
    } finally {
      client.close();
      server.close();
    }
  });

  it("still flushes through an agent that predates sync_after: a sync follows the exec", async () => {
    const { client, server, requests } = await recordingAgent("older", false);
    try {
      await client.exec({ command: ["true"], syncAfter: true });
      assert.deepEqual(
        requests.map((r) => r.op),
        ["exec", "sync"],
      );
    } finally {
      client.close();
      server.close();
    }
  });

  it("without syncAfter, neither asks for a flush nor sends a sync", async () => {
    const { client, server, requests } = await recordingAgent("plain", true);
    try {
      await client.exec({ command: ["true"] });
      assert.deepEqual(
        requests.map((r) => r.op),
        ["exec"],
      );
      assert.equal(requests[0]!.sync_after, undefined);
    } finally {
      client.close();
      server.close();
    }
  });
});
