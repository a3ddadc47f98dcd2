import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { DEFAULT_PROFILE, MODES, PROFILES, type ProfileName } from "../src/mcp/profiles.js";
import { CLI } from "./helpers/vm-fixtures.js";
import { connectStdio, toolText } from "./helpers/mcp-client.js";

// Expected lists come from the catalogue (src/mcp/catalog.ts via profiles.ts), never copied here;
// tool-catalog.test.ts checks the catalogue itself (nesting, modes, annotations).
const CORE: readonly string[] = PROFILES[DEFAULT_PROFILE].tools;

async function listTools(args: string[]) {
  const { client } = await connectStdio(args);
  try {
    return (await client.listTools()).tools;
  } finally {
    await client.close();
  }
}

describe("pyro mcp serve (stdio, through the MCP SDK client)", () => {
  it("serves workspace-core by default", async () => {
    assert.deepEqual(
      (await listTools([])).map((t) => t.name),
      CORE,
    );
    assert.ok(
      CORE.includes("vm_run") && CORE.includes("workspace_create") && !CORE.includes("shell_open"),
      "workspace-core: vm_run and the workspace loop, no shells",
    );
  });

  for (const profile of Object.keys(PROFILES) as ProfileName[]) {
    it(`serves exactly the ${profile} tool set`, async () => {
      assert.deepEqual(
        (await listTools(["--profile", profile])).map((t) => t.name),
        PROFILES[profile].tools,
      );
    });
  }

  for (const [mode, set] of Object.entries(MODES)) {
    it(`narrows tools and wording in ${mode} mode`, async () => {
      const tools = await listTools(["--mode", mode]);
      assert.deepEqual(
        tools.map((t) => t.name),
        set.tools,
      );
      for (const [name, description] of Object.entries(set.descriptions)) assert.equal(tools.find((t) => t.name === name)?.description, description);
    });
  }

  it("narrows schemas with the profile: snapshots only where snapshots exist", async () => {
    const core = (await listTools([])).find((t) => t.name === "workspace_reset")!;
    const full = (await listTools(["--profile", "workspace-full"])).find((t) => t.name === "workspace_reset")!;
    assert.equal("snapshot" in (core.inputSchema.properties ?? {}), false);
    assert.equal("snapshot" in (full.inputSchema.properties ?? {}), true);
    const create = (await listTools(["--profile", "workspace-full"])).find((t) => t.name === "workspace_create")!;
    assert.ok("mem_mib" in (create.inputSchema.properties ?? {}));
    assert.ok("network_policy" in (create.inputSchema.properties ?? {}));
    const coreCreate = (await listTools([])).find((t) => t.name === "workspace_create")!;
    assert.equal("secrets" in (coreCreate.inputSchema.properties ?? {}), false, "workspace-core does not expose secrets");
  });

  it("uses the contract's defaults where pyro has no reason to differ (service_logs tails 20 lines)", async () => {
    const tools = await listTools(["--profile", "workspace-full"]);
    const property = (tool: string, name: string) =>
      (tools.find((t) => t.name === tool)!.inputSchema.properties as Record<string, { default?: unknown }>)[name];
    assert.equal(property("service_logs", "tail_lines")?.default, 20);
    // Where pyro differs on purpose, the README says why (workspace_exec 120 s, shell_read plain).
    assert.equal(property("workspace_exec", "timeout_seconds")?.default, 120);
    assert.equal(property("shell_read", "plain")?.default, true);
    assert.equal(property("vm_run", "timeout_seconds")?.default, 30);
  });

  it("describes every tool for a model: short, with when to use it", async () => {
    for (const tool of await listTools(["--profile", "workspace-full"])) {
      assert.ok(tool.description && tool.description.length >= 30 && tool.description.length <= 400, `${tool.name}: ${tool.description}`);
    }
  });

  it("returns failures as actionable tool errors, and keeps serving", async () => {
    const { client } = await connectStdio();
    try {
      const r = await client.callTool({ name: "workspace_status", arguments: { workspace_id: "no-such-workspace" } });
      assert.equal(r.isError, true);
      assert.match(toolText(r), /^WORKSPACE_NOT_FOUND: .*\nNext step: Call workspace_list/s);
      const outside = await client.callTool({ name: "workspace_file_read", arguments: { workspace_id: "x", path: "../../etc/passwd" } });
      assert.equal(outside.isError, true);
      assert.equal((await client.listTools()).tools.length, CORE.length, "still serving");
    } finally {
      await client.close();
    }
  });

  it("writes nothing but MCP frames on stdout and exits cleanly when stdin closes", async () => {
    const child = spawn(process.execPath, [CLI, "mcp", "serve"], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const send = (msg: object) => child.stdin.write(JSON.stringify(msg) + "\n");
    send({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
    });
    send({ jsonrpc: "2.0", method: "notifications/initialized" });
    send({ jsonrpc: "2.0", id: 2, method: "tools/list" });
    while (!stdout.includes('"id":2')) await new Promise((r) => setTimeout(r, 20));
    child.stdin.end();
    assert.equal(await exited, 0);
    for (const line of stdout.trim().split("\n")) assert.equal(JSON.parse(line).jsonrpc, "2.0");
  });

  it("answers every request it read before stdin closed, then exits", async () => {
    const child = spawn(process.execPath, [CLI, "mcp", "serve"], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const requests = [
      { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } } },
      { jsonrpc: "2.0", method: "notifications/initialized" },
      { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "workspace_list", arguments: {} } },
      { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "workspace_status", arguments: { workspace_id: "no-such-workspace" } } },
      // A call the client cancels gets no answer: the server must not wait for one forever.
      { jsonrpc: "2.0", id: 4, method: "tools/call", params: { name: "workspace_list", arguments: {} } },
      { jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 4, reason: "test" } },
    ];
    // Everything at once, then EOF: the client does not wait for the answers before closing stdin.
    child.stdin.end(requests.map((m) => JSON.stringify(m) + "\n").join(""));
    assert.equal(await exited, 0);
    const answers = new Map(
      stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { id: number; result: { isError?: boolean; content: { text: string }[] } })
        .map((m) => [m.id, m]),
    );
    assert.deepEqual(JSON.parse(answers.get(2)!.result.content[0]!.text).workspaces, []);
    assert.match(answers.get(3)!.result.content[0]!.text, /^WORKSPACE_NOT_FOUND/);
  });

  it("refuses an argument a tool does not know instead of silently dropping it", async () => {
    const { client } = await connectStdio();
    try {
      const r = await client.callTool({ name: "workspace_exec", arguments: { workspace_id: "w", command: "ls", timeout: 5 } });
      assert.equal(r.isError, true);
      assert.match(toolText(r), /Unrecognized key: "timeout"; workspace_exec accepts workspace_id, command, cwd, timeout_seconds/);
      const exec = (await client.listTools()).tools.find((t) => t.name === "workspace_exec")!;
      assert.equal(exec.inputSchema.additionalProperties, false, "the schema tells the client too");
    } finally {
      await client.close();
    }
  });

  it("refuses two readiness checks instead of silently using one", async () => {
    const { client } = await connectStdio(["--profile", "workspace-full"]);
    try {
      const r = await client.callTool({
        name: "service_start",
        arguments: { workspace_id: "w", name: "s", command: "true", ready_file: "a", ready_tcp_port: 80 },
      });
      assert.equal(r.isError, true);
      assert.match(toolText(r), /^INVALID_ARGUMENT: give at most one of ready_file, ready_tcp_port/);
    } finally {
      await client.close();
    }
  });

  it("refuses a command larger than the guest protocol carries as INVALID_ARGUMENT, naming the limit", async () => {
    const { client } = await connectStdio(["--profile", "workspace-full"]);
    try {
      const huge = "echo " + "a".repeat(2_000_000);
      for (const [name, args] of [
        ["workspace_exec", { workspace_id: "no-such-workspace", command: huge }],
        ["vm_run", { environment: "debian:99", command: huge }], // checked before the environment: nothing boots
        ["service_start", { workspace_id: "no-such-workspace", name: "s", command: huge }],
      ] as const) {
        const r = await client.callTool({ name, arguments: args });
        assert.equal(r.isError, true, name);
        assert.match(toolText(r), /^INVALID_ARGUMENT: .* takes \d+ bytes; a guest request carries at most 1048576 bytes/, name);
      }
    } finally {
      await client.close();
    }
  });
});

/** A token long enough for serveHttp, passed the way a user should: in the environment, never argv. */
const TOKEN = "test-token-0123456789abcdef";
const withToken = (token = TOKEN) => ({ env: { ...process.env, PYRO_MCP_TOKEN: token } });

function exitOf(child: ReturnType<typeof spawn>): Promise<{ code: number | null; stderr: string }> {
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  return new Promise((r) => child.on("exit", (code) => r({ code, stderr })));
}

/** A raw request with a chosen Host header (fetch will not let a caller set one). */
function statusWithHost(port: number, host: string, token: string): Promise<number> {
  return new Promise((resolve, rejectRequest) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/mcp",
        method: "POST",
        headers: { host, authorization: `Bearer ${token}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on("error", rejectRequest);
    req.end(
      JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
      }),
    );
  });
}

describe("pyro mcp serve --http (Streamable HTTP)", () => {
  it("binds a free port for port 0 and prints the port it bound", async () => {
    const child = spawn(process.execPath, [CLI, "mcp", "serve", "--http", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"], ...withToken() });
    try {
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      while (!stderr.includes("serving")) await new Promise((r) => setTimeout(r, 20));
      const port = Number(/http:\/\/127\.0\.0\.1:(\d+)\/mcp/.exec(stderr)?.[1]);
      assert.ok(port > 0 && port < 65536, stderr);
      const client = new Client({ name: "http-test", version: "1" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${TOKEN}`, origin: `http://127.0.0.1:${port}` } },
        }),
      );
      assert.ok((await client.listTools()).tools.length > 0);
      await client.close();
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("refuses a port out of range, or one already in use, with one line", async () => {
    const range = spawnSync(process.execPath, [CLI, "mcp", "serve", "--http", "127.0.0.1:99999"], { encoding: "utf8", ...withToken() });
    assert.equal(range.status, 2);
    assert.match(range.stderr, /^error: .*port must be a number from 0 to 65535/);
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
    try {
      const port = (busy.address() as AddressInfo).port;
      const child = spawn(process.execPath, [CLI, "mcp", "serve", "--http", `127.0.0.1:${port}`], { stdio: ["ignore", "ignore", "pipe"], ...withToken() });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      assert.equal(await new Promise((r) => child.on("exit", r)), 125);
      assert.match(stderr, new RegExp(`^pyro: error \\[INVALID_ARGUMENT\\]: cannot serve on 127\\.0\\.0\\.1:${port}: the port is already in use`));
    } finally {
      busy.close();
    }
  });

  it("requires the bearer token, checks the host and origin, and serves tools", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const token = "test-token-from-a-file-" + process.pid;
    const tokenFile = join(mkdtempSync(join(tmpdir(), "pyro-token-")), "token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const child = spawn(process.execPath, [CLI, "mcp", "serve", "--http", `127.0.0.1:${port}`, "--token-file", tokenFile], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    try {
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      while (!stderr.includes("serving")) await new Promise((r) => setTimeout(r, 20));
      const url = `http://127.0.0.1:${port}/mcp`;
      const init = {
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
      };
      const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
      assert.equal((await fetch(url, { method: "POST", headers, body: JSON.stringify(init) })).status, 401);
      assert.equal((await fetch(url, { method: "POST", headers: { ...headers, authorization: "Bearer wrong" }, body: JSON.stringify(init) })).status, 401);
      const evil = await fetch(url, {
        method: "POST",
        headers: { ...headers, authorization: `Bearer ${token}`, origin: "https://evil.example" },
        body: JSON.stringify(init),
      });
      assert.equal(evil.status, 403);
      // DNS rebinding: a page under a foreign name reaches 127.0.0.1, but its Host names that page.
      assert.equal(await statusWithHost(port, `evil.example:${port}`, token), 403);
      assert.equal(await statusWithHost(port, `127.0.0.1:${port + 1}`, token), 403);
      assert.equal(await statusWithHost(port, "127.0.0.1", token), 403);
      assert.notEqual(await statusWithHost(port, `localhost:${port}`, token), 403);
      const client = new Client({ name: "http-test", version: "1" });
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
      assert.deepEqual(
        (await client.listTools()).tools.map((t) => t.name),
        CORE,
      );
      await client.close();
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("refuses to listen on a non-loopback address", async () => {
    const child = spawn(process.execPath, [CLI, "mcp", "serve", "--http", "0.0.0.0:8765"], { stdio: ["ignore", "ignore", "pipe"], ...withToken() });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise((r) => child.on("exit", r));
    assert.equal(code, 125);
    assert.match(stderr, /loopback addresses only/);
  });

  it("refuses an empty or short token instead of accepting requests without one", async () => {
    for (const token of ["", "short"]) {
      const { code, stderr } = await exitOf(
        spawn(process.execPath, [CLI, "mcp", "serve", "--http", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"], ...withToken(token) }),
      );
      assert.equal(code, 125, stderr);
      assert.match(stderr, /^pyro: error \[INVALID_ARGUMENT\]: the bearer token must be at least 16 bytes/);
    }
  });

  it("takes no token on the command line, and only a token file other users cannot read", async () => {
    const argv = spawnSync(process.execPath, [CLI, "mcp", "serve", "--http", "127.0.0.1:0", "--token", TOKEN], { encoding: "utf8" });
    assert.equal(argv.status, 2);
    assert.match(argv.stderr, /^error: --token is not accepted: .*use --token-file PATH \(mode 0600\) or set PYRO_MCP_TOKEN/m);
    const tokenFile = join(mkdtempSync(join(tmpdir(), "pyro-token-")), "token");
    writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
    chmodSync(tokenFile, 0o644);
    const { code, stderr } = await exitOf(
      spawn(process.execPath, [CLI, "mcp", "serve", "--http", "127.0.0.1:0", "--token-file", tokenFile], { stdio: ["ignore", "ignore", "pipe"] }),
    );
    assert.equal(code, 125);
    assert.match(stderr, /readable by other users \(mode 644\); run chmod 600/);
  });
});
