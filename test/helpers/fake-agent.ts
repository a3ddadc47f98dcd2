import { createServer, type Server, type Socket } from "node:net";
import { AgentClient } from "../../src/guest-protocol/agent-client.js";
import { encodeFrame, FrameDecoder } from "../../src/guest-protocol/frame-codec.js";

/** An honest agent's answer to hello request `id`. */
export const honestHello = (id: unknown) => encodeFrame({ id, ok: true, protocol: 1, agent_version: "0.1.0", boot_ms: 1, uptime_ms: 2 });

/** An honest agent's reply to exec request `id`: exit 0, `out` as its whole stdout, and any `extra` fields. */
export const honestExec = (id: unknown, out = Buffer.alloc(0), extra: Record<string, unknown> = {}) =>
  encodeFrame(
    {
      id,
      ok: true,
      exit_code: 0,
      signal: null,
      timed_out: false,
      duration_ms: 1,
      stdout_len: out.length,
      stdout_total: out.length,
      stdout_head_len: out.length,
      stderr_len: 0,
      stderr_total: 0,
      stderr_head_len: 0,
      ...extra,
    },
    out,
  );

/** Answers one request frame (its decoded header) on the agent's socket, however it likes. */
export type AgentResponder = (request: Record<string, unknown>, socket: Socket) => void;

/**
 * A unix socket server at `socketPath` playing the guest agent, without a VM (root in the guest can
 * write any byte to the agent's port): like pyro's attach, a hello is answered honestly first, then
 * every other request goes to `respond`. Returns a client already through its hello.
 */
export async function fakeAgent(socketPath: string, respond: AgentResponder): Promise<{ client: AgentClient; server: Server }> {
  const server = createServer((socket) => {
    const decoder = new FrameDecoder();
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      decoder.push(chunk);
      for (let item = decoder.next(); item; item = decoder.next()) {
        if (item.kind !== "frame") continue;
        if (item.header.op === "hello")
          socket.write(encodeFrame({ id: item.header.id, ok: true, protocol: 1, agent_version: "0.1.0", boot_ms: 1, uptime_ms: 2 }));
        else respond(item.header, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const client = await AgentClient.connect(socketPath, Date.now() + 2_000);
  await client.hello();
  return { client, server };
}
