/**
 * Benchmark (not a test): the tools/list payload a chat host loads into its model's context, per
 * profile and mode, in bytes and approximate tokens (bytes / 4). workspace-core should stay lean.
 *
 *   node dist/bench/mcp-tools-payload.js
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { createPyroMcpServer } from "../src/mcp/server.js";
import { MODES, PROFILES, type ModeName, type ProfileName } from "../src/mcp/profiles.js";
import { Pyro } from "../src/sdk/pyro.js";

async function payload(profile?: ProfileName, mode?: ModeName): Promise<{ tools: number; bytes: number }> {
  const server = createPyroMcpServer({ pyro: new Pyro(), ...(profile ? { profile } : {}), ...(mode ? { mode } : {}) });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: "bench", version: "1" });
  await client.connect(clientSide);
  const list = await client.listTools();
  await client.close();
  return { tools: list.tools.length, bytes: Buffer.byteLength(JSON.stringify(list)) };
}

const rows: [string, { tools: number; bytes: number }][] = [];
for (const profile of Object.keys(PROFILES) as ProfileName[]) rows.push([`profile ${profile}`, await payload(profile)]);
for (const mode of Object.keys(MODES) as ModeName[]) rows.push([`mode ${mode}`, await payload(undefined, mode)]);
const core = rows.find(([n]) => n === "profile workspace-core")![1].bytes;
console.log("tools/list payload per profile and mode");
for (const [name, r] of rows) {
  console.log(
    `${name.padEnd(26)} ${String(r.tools).padStart(2)} tools ${String(r.bytes).padStart(6)} bytes ~${String(Math.round(r.bytes / 4)).padStart(5)} tokens  ${(r.bytes / core).toFixed(2)}x core`,
  );
}
