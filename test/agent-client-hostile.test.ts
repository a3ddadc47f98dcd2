/**
 * The host side of the guest channel against a hostile peer, without a VM: a unix socket server
 * plays a forged agent (root in the guest can write any byte to the virtio-serial port). The real
 * guest-side version of these attacks is hostile-agent.vm.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError, PyroError } from "../src/errors.js";
import { AgentClient, FRAME_STALL_MS, MAX_LEFTOVER_BYTES, MAX_UNSOLICITED_FRAMES } from "../src/guest-protocol/agent-client.js";
import { encodeFrame, FrameDecoder, FRAME_MAGIC, FRAME_PREFIX_LEN, MAX_HEADER_DEPTH, type DecodedItem } from "../src/guest-protocol/frame-codec.js";
import { entryPathProblem } from "../src/guest-protocol/reply-contracts.js";
import { type AgentResponder, fakeAgent, honestExec, honestHello } from "./helpers/fake-agent.js";

type Responder = AgentResponder;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "pyro-hostile-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let serial = 0;
/** A forged agent: `respond` answers each request frame (after an honest hello) however it likes. */
async function forgedAgent(respond: Responder): Promise<{ client: AgentClient; server: Server }> {
  const forged = await fakeAgent(join(dir, `a${serial++}.sock`), respond);
  forged.client.label = "workspace hostile-test";
  return forged;
}

function prefix(headerLen: number, payloadLen: number): Buffer {
  const p = Buffer.alloc(FRAME_PREFIX_LEN);
  FRAME_MAGIC.copy(p);
  p.writeUInt32BE(headerLen, 4);
  p.writeUInt32BE(payloadLen, 8);
  return p;
}

function rawFrame(header: string | Buffer, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.isBuffer(header) ? header : Buffer.from(header);
  return Buffer.concat([prefix(h.length, payload.length), h, payload]);
}

/** Runs one exec against a forged agent and returns how it ended, and how long that took. */
async function execAgainst(respond: Responder, maxOutputBytes = 1024): Promise<{ error?: PyroError; ms: number }> {
  const { client, server } = await forgedAgent(respond);
  const started = Date.now();
  try {
    await client.exec({ command: ["true"], maxOutputBytes, timeoutMs: 5_000 });
    return { ms: Date.now() - started };
  } catch (error) {
    assert.ok(error instanceof PyroError, `not a PyroError: ${String(error)}`);
    return { error, ms: Date.now() - started };
  } finally {
    client.close();
    server.close();
  }
}

function assertViolation(result: { error?: PyroError; ms: number }, reason: RegExp, withinMs = 2_000): void {
  assert.ok(result.error, "the hostile reply was accepted");
  assert.equal(result.error.code, "GUEST_PROTOCOL_ERROR", result.error.message);
  assert.match(result.error.message, /workspace hostile-test/);
  assert.match(result.error.message, reason);
  assert.ok(result.ms < withinMs, `took ${result.ms} ms`);
}

describe("agent client against a forged agent", () => {
  it("accepts an honest reply (the harness itself works)", async () => {
    const result = await execAgainst((req, s) => s.write(honestExec(req.id, Buffer.from("hi"))));
    assert.equal(result.error, undefined);
  });

  it("rejects an oversized payload from its prefix, before any of it arrives", async () => {
    // Only the prefix and header are sent: a client that waited for the payload would stall instead.
    const result = await execAgainst((req, s) => {
      const header = Buffer.from(JSON.stringify({ id: req.id, ok: true }));
      s.write(Buffer.concat([prefix(header.length, 100 << 20), header]));
    });
    assertViolation(result, /out of bounds/);
  });

  it("rejects a payload over the request's own cap even when the frame is small", async () => {
    const result = await execAgainst((req, s) => s.write(honestExec(req.id, Buffer.alloc(5000))), 1024);
    assertViolation(result, /frame length out of bounds \(header \d+ bytes, payload 5000 bytes\)/);
    // With a bigger read in flight the prefix passes; the exec's own cap still applies.
    const { client, server } = await forgedAgent((req, s) => {
      if (req.op === "exec") s.write(honestExec(req.id, Buffer.alloc(5000)));
    });
    const read = client.readFile("/big", { maxBytes: 10_000 });
    await assert.rejects(
      client.exec({ command: ["true"], maxOutputBytes: 1024 }),
      (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && /exec reply carries 5000 payload bytes, more than the 2048/.test(e.message),
    );
    await assert.rejects(read, (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR"));
    client.close();
    server.close();
  });

  it("rejects a header too big for the op", async () => {
    const result = await execAgainst((req, s) => s.write(encodeFrame({ id: req.id, ok: true, pad: "x".repeat(200_000) })));
    assertViolation(result, /header \(max 65536\)/);
  });

  it("rejects garbage between frames", async () => {
    const result = await execAgainst((req, s) => s.write(Buffer.concat([encodeFrame({ id: 0, event: "ready" }), Buffer.from("garbage"), honestExec(req.id)])));
    assertViolation(result, /malformed frame \(bad magic\)/);
  });

  it("drops what an earlier connection left behind, until the first reply of this one", async () => {
    // QEMU delivers what the guest wrote while no host was connected to the next connection.
    const socketPath = join(dir, `a${serial++}.sock`);
    const server = createServer((socket) => {
      const decoder = new FrameDecoder();
      socket.on("data", (chunk: Buffer) => {
        decoder.push(chunk);
        for (let item = decoder.next(); item; item = decoder.next()) {
          if (item.kind !== "frame") continue;
          if (item.header.op === "hello") {
            // An old payload's tail, an old exec reply too big for anything pending, an old event,
            // an old small reply: all from a connection whose ids were not this one's.
            const leftovers = [
              Buffer.from("tail of an old payload"),
              honestExec(2, Buffer.alloc(300_000)),
              encodeFrame({ id: 0, event: "ready" }),
              encodeFrame({ id: 3, ok: true }),
            ];
            socket.write(Buffer.concat([...leftovers, honestHello(item.header.id)]));
          } else socket.write(honestExec(item.header.id, Buffer.from("fresh")));
        }
      });
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
    const client = await AgentClient.connect(socketPath, Date.now() + 2_000);
    await client.waitReady(Date.now() + 5_000);
    assert.equal((await client.exec({ command: ["true"] })).stdout.bytes.toString(), "fresh");
    client.close();
    server.close();
  });

  it("ends an endless event flood before the first reply at the leftover budget, never buffering it", { timeout: 60_000 }, async () => {
    // Leftover frames are tolerated before this connection's first reply, but only up to a budget.
    const socketPath = join(dir, `a${serial++}.sock`);
    const event = encodeFrame({ id: 0, event: "log", pad: "x".repeat(900_000) });
    const server = createServer((socket) => {
      socket.on("error", () => undefined);
      let sent = 0;
      const flood = () => {
        while (!socket.destroyed && sent <= MAX_LEFTOVER_BYTES + event.length) {
          sent += event.length;
          if (!socket.write(event)) return void socket.once("drain", flood);
        }
      };
      socket.once("data", flood); // the hello is never answered
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
    const client = await AgentClient.connect(socketPath, Date.now() + 2_000);
    client.label = "workspace hostile-test";
    const rssBefore = process.memoryUsage().rss;
    await assert.rejects(client.waitReady(Date.now() + 50_000), (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && /before answering/.test(e.message));
    assert.ok(process.memoryUsage().rss - rssBefore < 128 * 1024 * 1024, "the flood was buffered");
    client.close();
    server.close();
  });

  it("rejects replies to unknown and reused ids", async () => {
    assertViolation(await execAgainst((req, s) => s.write(honestExec(Number(req.id) + 1000))), /never sent/);
    let first: unknown;
    const { client, server } = await forgedAgent((req, s) => {
      first ??= req.id;
      s.write(honestExec(req.id));
      if (req.id !== first) s.write(honestExec(first));
    });
    await client.exec({ command: ["true"] });
    await assert.rejects(
      client.exec({ command: ["true"] }).then(() => client.exec({ command: ["true"] })),
      (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && /request \d+ again/.test(e.message),
    );
    client.close();
    server.close();
  });

  it("rejects a flood of events", async () => {
    const result = await execAgainst((_req, s) => {
      for (let n = 0; n < MAX_UNSOLICITED_FRAMES + 50; n++) s.write(encodeFrame({ id: 0, event: "log", n }));
    });
    assertViolation(result, /frames nobody asked for/);
  });

  it("rejects deeply nested, invalid UTF-8 and non-JSON headers", async () => {
    const deep = (id: unknown) => `{"id":${id},"ok":true,"x":${"[".repeat(100_000)}${"]".repeat(100_000)}}`;
    assertViolation(await execAgainst((req, s) => s.write(rawFrame(deep(req.id)))), new RegExp(`deeper than ${MAX_HEADER_DEPTH}`));
    const badUtf8 = (id: unknown) => Buffer.concat([Buffer.from(`{"id":${id},"ok":true,"x":"`), Buffer.from([0xff, 0xc0, 0x80]), Buffer.from(`"}`)]);
    assertViolation(await execAgainst((req, s) => s.write(rawFrame(badUtf8(req.id)))), /not valid UTF-8/);
    assertViolation(await execAgainst((req, s) => s.write(rawFrame(`{"id":${req.id},`))), /not valid JSON/);
  });

  it("rejects wrong types and impossible exec lengths", async () => {
    assertViolation(await execAgainst((req, s) => s.write(encodeFrame({ id: req.id, ok: true, exit_code: "0" }))), /wrong shape/);
    const huge = (id: unknown) =>
      encodeFrame({
        id,
        ok: true,
        exit_code: 0,
        timed_out: false,
        duration_ms: 1,
        stdout_len: 2 ** 40,
        stdout_total: 2 ** 50,
        stdout_head_len: 0,
        stderr_len: 0,
        stderr_total: 0,
        stderr_head_len: 0,
      });
    assertViolation(await execAgainst((req, s) => s.write(huge(req.id))), /declares 1099511627776\+0 output bytes but carries 0/);
    assertViolation(await execAgainst((req, s) => s.write(encodeFrame({ id: req.id, ok: false, error: { code: 7 } }))), /error reply is malformed/);
  });

  it("fails a frame that stops arriving midway instead of hanging", { timeout: FRAME_STALL_MS + 10_000 }, async () => {
    const result = await execAgainst((_req, s) => s.write(Buffer.concat([prefix(100, 0), Buffer.from('{"id":')])));
    assertViolation(result, /stopped sending in the middle of a frame/, FRAME_STALL_MS + 2_000);
    assert.ok(result.ms >= FRAME_STALL_MS - 100);
  });

  it("rejects listings with too many entries or names outside the listed directory", async () => {
    const entry = (path: string) => ({ path, type: "file", size: 1, mode: 0o644, mtime_ms: 0 });
    for (const [entries, reason] of [
      [[entry("/workspace/../etc/passwd")], /'\.' or '\.\.' segments/],
      [[entry("/etc/shadow")], /outside the listed directory/],
      [[entry("/workspace/a"), entry("/workspace/b"), entry("/workspace/c")], /3 entries, more than the 2/],
    ] as const) {
      const { client, server } = await forgedAgent((req, s) => s.write(encodeFrame({ id: req.id, ok: true, truncated: false, entries })));
      await assert.rejects(client.list("/workspace", { maxEntries: 2 }), (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && reason.test(e.message));
      client.close();
      server.close();
    }
  });

  it("rejects a freeze held longer than the host asked for, which would stretch the host's copy", async () => {
    const { client, server } = await forgedAgent((req, s) => s.write(encodeFrame({ id: req.id, ok: true, frozen: true, token: 1, hold_ms: 3_600_000 })));
    await assert.rejects(
      client.freezeWorkspace({ holdMs: 10_000 }),
      (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && /fs.freeze granted 3600000 ms, more than the 10000 asked for/.test(e.message),
    );
    client.close();
    server.close();
  });

  it("gives one typed error for anything a forged agent can send (property)", async () => {
    const frameArb = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc
        .tuple(fc.nat(2 ** 32 - 1), fc.nat(2 ** 32 - 1), fc.uint8Array({ maxLength: 64 }))
        .map(([h, p, rest]) => Buffer.concat([prefix(h, p), Buffer.from(rest)])),
      fc.tuple(fc.jsonValue({ maxDepth: 4 }), fc.uint8Array({ maxLength: 32 })).map(([v, p]) => rawFrame(JSON.stringify(v) ?? "null", Buffer.from(p))),
      fc
        .tuple(
          fc.constantFrom(0, 1, 2, 99),
          fc.dictionary(
            fc.constantFrom("ok", "exit_code", "stdout_len", "stderr_len", "stdout_total", "timed_out", "duration_ms", "error"),
            fc.jsonValue({ maxDepth: 2 }),
          ),
          fc.uint8Array({ maxLength: 16 }),
        )
        .map(([id, h, p]) => rawFrame(JSON.stringify({ ...h, id }), Buffer.from(p))),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(frameArb, { maxLength: 6 }), async (frames) => {
        const result = await execAgainst((_req, s) => s.end(Buffer.concat(frames)), 16);
        if (result.error) assert.ok(["GUEST_PROTOCOL_ERROR", "VM_DIED"].includes(result.error.code), result.error.message);
        assert.ok(result.ms < 2_000);
      }),
      { numRuns: 60 },
    );
  });
});

describe("frame decoder with limits against adversarial bytes", () => {
  const limits = { maxHeaderBytes: 256, maxPayloadBytes: () => 512 };
  const bound = FRAME_PREFIX_LEN + 256 + 512;
  const chunkArb = fc.oneof(
    fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.nat(2 ** 32 - 1), fc.nat(2 ** 32 - 1)).map(([h, p]) => prefix(h, p)),
    fc.tuple(fc.nat(300), fc.nat(600)).map(([h, p]) => prefix(h, p)),
    fc.tuple(fc.jsonValue({ maxDepth: 3 }), fc.uint8Array({ maxLength: 600 })).map(([v, p]) => rawFrame(JSON.stringify(v) ?? "null", Buffer.from(p))),
    fc.nat(40).map((d) => rawFrame("[".repeat(d) + "]".repeat(d))),
  );

  it("never throws, never holds more than one in-bounds frame, and only yields bounded object frames (property)", () => {
    fc.assert(
      fc.property(fc.array(chunkArb, { maxLength: 12 }), (chunks) => {
        const decoder = new FrameDecoder(limits);
        for (const chunk of chunks) {
          decoder.push(chunk);
          for (let item: DecodedItem | undefined = decoder.next(); item; item = decoder.next()) {
            if (item.kind === "frame") {
              assert.ok(item.payload.length <= 512);
              assert.ok(typeof item.header === "object" && !Array.isArray(item.header));
            }
          }
          assert.ok(decoder.bufferedBytes <= bound, `${decoder.bufferedBytes} bytes buffered`);
          assert.ok(decoder.missingBytes >= 0);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("confines listed paths to the listed directory (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("a", "..", ".", "", "/", "b c", "\u00e9"), { maxLength: 6 }), (parts) => {
        const path = "/workspace/" + parts.join("/");
        if (entryPathProblem(path, "/workspace") === undefined) {
          assert.ok(path.startsWith("/workspace/") && !path.split("/").includes(".."));
        }
      }),
    );
  });
});
