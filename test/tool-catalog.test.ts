import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { TOOL_CATALOG } from "../src/mcp/catalog.js";
import { MODE_NAMES, PROFILE_NAMES, type ModeName, type ProfileName } from "../src/mcp/profile-names.js";
import { MODES, PROFILES } from "../src/mcp/profiles.js";
import { createPyroMcpServer } from "../src/mcp/server.js";
import { renderToolTable, withToolTable } from "../src/mcp/tool-table.js";
import { packageRoot } from "../src/paths.js";
import { COMMAND_TIMEOUT_MAX_SECONDS, MACHINE_SHAPE_LIMITS } from "../src/runtime/guest-limits.js";
import { Pyro } from "../src/sdk/pyro.js";
import { FILE_READ_MAX_BYTES, NETWORK_POLICIES, SHELL_READ_DEFAULTS } from "../src/workspaces/workspace-limits.js";
import { toolText } from "./helpers/mcp-client.js";

/** A real MCP client connected in-process to pyro's server (nothing boots: only listing and refusals). */
async function connect(options: { profile?: ProfileName; mode?: ModeName } = {}): Promise<Client> {
  const server = createPyroMcpServer({ pyro: new Pyro(), ...options });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: "catalog-test", version: "1" });
  await client.connect(clientSide);
  return client;
}

describe("the tool catalogue", () => {
  it("declares each tool once, with a snake_case name, a model-sized description and consistent annotations", () => {
    const names = TOOL_CATALOG.map((tool) => tool.name);
    assert.equal(new Set(names).size, names.length, "a tool is declared twice");
    for (const tool of TOOL_CATALOG) {
      assert.match(tool.name, /^[a-z]+(_[a-z]+)+$/, tool.name);
      assert.ok(tool.description.length >= 30 && tool.description.length <= 400, tool.name);
      assert.ok(!(tool.annotations.readOnlyHint && tool.annotations.destructiveHint), `${tool.name} cannot be read-only and destructive`);
      for (const keys of Object.values(tool.gated ?? {}))
        for (const key of keys) assert.ok(key in tool.input, `${tool.name}: gated argument ${key} is not in its schema`);
    }
  });

  it("nests the profiles, and every mode draws on workspace-full's tools", () => {
    for (let i = 1; i < PROFILE_NAMES.length; i++) {
      const smaller = PROFILES[PROFILE_NAMES[i - 1]!].tools;
      const larger = PROFILES[PROFILE_NAMES[i]!].tools;
      for (const name of smaller) assert.ok(larger.includes(name), `${name} is in ${PROFILE_NAMES[i - 1]} but not ${PROFILE_NAMES[i]}`);
    }
    assert.deepEqual(PROFILES["vm-run"].tools, ["vm_run"]);
    assert.deepEqual([...PROFILES["workspace-full"].tools].sort(), TOOL_CATALOG.map((tool) => tool.name).sort(), "workspace-full serves the whole catalogue");
    for (const mode of MODE_NAMES) {
      for (const name of MODES[mode].tools) assert.ok(PROFILES["workspace-full"].tools.includes(name), `${mode}: ${name}`);
      for (const name of Object.keys(MODES[mode].descriptions))
        assert.ok((MODES[mode].tools as readonly string[]).includes(name), `${mode} rewords ${name}, which it does not serve`);
    }
  });

  it("states the domain's limits in the served schemas instead of copies", async () => {
    const client = await connect({ profile: "workspace-full" });
    try {
      const tools = (await client.listTools()).tools;
      const property = (tool: string, key: string) =>
        (tools.find((t) => t.name === tool)!.inputSchema.properties as Record<string, { maximum?: number; description?: string; enum?: string[] }>)[key]!;
      assert.equal(property("vm_run", "timeout_seconds").maximum, COMMAND_TIMEOUT_MAX_SECONDS);
      assert.equal(property("workspace_exec", "timeout_seconds").maximum, COMMAND_TIMEOUT_MAX_SECONDS);
      const { min, max } = MACHINE_SHAPE_LIMITS.memMib;
      assert.match(property("workspace_create", "mem_mib").description!, new RegExp(`${min}-${max}`));
      assert.deepEqual(property("workspace_create", "network_policy").enum, [...NETWORK_POLICIES]);
      assert.equal(property("workspace_file_read", "max_bytes").maximum, FILE_READ_MAX_BYTES);
      assert.equal(property("workspace_disk_read", "max_bytes").maximum, FILE_READ_MAX_BYTES);
      assert.equal(property("shell_read", "wait_for_idle_ms").maximum, SHELL_READ_DEFAULTS.waitForIdleMaxMs);
      for (const tool of tools) assert.equal(typeof tool.annotations?.readOnlyHint, "boolean", tool.name);
      for (const name of ["vm_run", "workspace_exec"]) {
        const output = tools.find((t) => t.name === name)!.outputSchema;
        assert.ok(output?.properties && "exit_code" in output.properties && "stdout" in output.properties, `${name} declares its result's schema`);
      }
    } finally {
      await client.close();
    }
  });

  it("refuses an unknown argument as an isError result naming the arguments the tool accepts", async () => {
    const core = await connect();
    try {
      const exec = await core.callTool({ name: "workspace_exec", arguments: { workspace_id: "w", command: "ls", timeout: 5 } });
      assert.equal(exec.isError, true);
      assert.match(toolText(exec), /Unrecognized key: "timeout"; workspace_exec accepts workspace_id, command, cwd, timeout_seconds$/);
      // A gated argument is unknown where the profile does not offer it, and the answer says what is.
      const reset = await core.callTool({ name: "workspace_reset", arguments: { workspace_id: "w", snapshot: "s", colour: "red" } });
      assert.equal(reset.isError, true);
      assert.match(toolText(reset), /Unrecognized keys: "snapshot", "colour"; workspace_reset accepts workspace_id$/);
      const list = await core.callTool({ name: "workspace_list", arguments: { all: true } });
      assert.match(toolText(list), /Unrecognized key: "all"; workspace_list accepts no arguments$/);
    } finally {
      await core.close();
    }
    const full = await connect({ profile: "workspace-full" });
    try {
      const reset = await full.callTool({ name: "workspace_reset", arguments: { workspace_id: "no-such-workspace", snapshot: "s" } });
      assert.match(toolText(reset), /^WORKSPACE_NOT_FOUND: /, "workspace-full accepts snapshot");
    } finally {
      await full.close();
    }
  });

  it("returns results as structuredContent as well as text", async () => {
    const client = await connect();
    try {
      const r = await client.callTool({ name: "workspace_list", arguments: {} });
      assert.deepEqual(r.structuredContent, JSON.parse(toolText(r)));
      assert.deepEqual((r.structuredContent as { workspaces: unknown[] }).workspaces, []);
    } finally {
      await client.close();
    }
  });

  it("keeps README.md's tool table generated from the catalogue (node scripts/update-readme-tools.mjs)", () => {
    const readme = readFileSync(join(packageRoot(), "README.md"), "utf8");
    assert.equal(readme, withToolTable(readme, renderToolTable()), "README.md's tool table is stale: run node scripts/update-readme-tools.mjs");
    for (const tool of TOOL_CATALOG) assert.ok(readme.includes(`| \`${tool.name}\` |`), tool.name);
  });
});
