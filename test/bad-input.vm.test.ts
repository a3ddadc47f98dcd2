import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type AddressInfo, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";
import { CLI } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

async function listen(port = 0): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", resolve));
  return server;
}

describe("[vm] a failure midway leaves nothing half-done", () => {
  let id: string;
  before(async () => {
    id = (await pyro.createWorkspace("debian:12", { networkPolicy: "egress+published-ports" })).workspace_id;
  });
  after(async () => {
    await pyro.execWorkspace(id, ["chattr", "-i", "locked.txt"]).catch(() => undefined);
    await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("service start with a busy --publish port starts nothing, publishes nothing, and can be retried", TIMEOUT, async () => {
    const busy = await listen();
    const free = await listen();
    const busyPort = (busy.address() as AddressInfo).port;
    const freePort = (free.address() as AddressInfo).port;
    await new Promise((r) => free.close(r));
    try {
      await assert.rejects(
        pyro.startService(id, "web", ["sleep", "600"], {
          publish: [
            { hostPort: freePort, guestPort: 8080 },
            { hostPort: busyPort, guestPort: 8081 },
          ],
        }),
        (e) =>
          isPyroError(e, "INVALID_ARGUMENT") &&
          new RegExp(`cannot publish guest port 8081 on 127\\.0\\.0\\.1:${busyPort} .*Nothing was started`).test(e.message),
      );
      assert.deepEqual((await pyro.listServices(id)).services, [], "no unrecorded service");
      (await listen(freePort)).close(); // the port published before the failure was given back
      const retry = await pyro.startService(id, "web", ["sleep", "600"]);
      assert.equal(retry.state, "running", "the same name starts: nothing was left running under it");
      assert.equal((await pyro.stopService(id, "web")).state, "stopped");
    } finally {
      busy.close();
    }
  });

  it("patch apply rolls back the files it wrote when a later write fails", TIMEOUT, async () => {
    await pyro.writeWorkspaceFile(id, "first.txt", "one\n");
    await pyro.writeWorkspaceFile(id, "locked.txt", "two\n");
    // An immutable file refuses writes even from root: the third write of the patch fails.
    const lock = await pyro.execWorkspace(id, ["chattr", "+i", "locked.txt"]);
    assert.equal(lock.exit_code, 0, lock.stderr);
    const patch = [
      "--- /dev/null",
      "+++ b/new.txt",
      "@@ -0,0 +1 @@",
      "+new",
      "--- a/first.txt",
      "+++ b/first.txt",
      "@@ -1 +1 @@",
      "-one",
      "+ONE",
      "--- a/locked.txt",
      "+++ b/locked.txt",
      "@@ -1 +1 @@",
      "-two",
      "+TWO",
      "",
    ].join("\n");
    await assert.rejects(
      pyro.applyWorkspacePatch(id, patch),
      (e) => isPyroError(e, "PATCH_FAILED") && /writing locked\.txt failed .*restored, so nothing was changed/.test(e.message),
    );
    assert.equal((await pyro.readWorkspaceFile(id, "first.txt")).content, "one\n", "first.txt restored");
    assert.equal((await pyro.execWorkspace(id, ["test", "-e", "new.txt"])).exit_code, 1, "new.txt removed again");
    assert.equal((await pyro.readWorkspaceFile(id, "locked.txt")).content, "two\n");
  });
});

describe("[vm] MCP stdio: stdin closing mid-create", () => {
  it("finishes the workspace being created and writes its answer before exiting", TIMEOUT, async () => {
    const child = spawn(process.execPath, [CLI, "mcp", "serve"], { stdio: ["pipe", "pipe", "ignore"] });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    child.stdin.end(
      [
        { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } } },
        { jsonrpc: "2.0", method: "notifications/initialized" },
        { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "workspace_create", arguments: {} } },
      ]
        .map((m) => JSON.stringify(m) + "\n")
        .join(""),
    );
    assert.equal(await exited, 0);
    const answer = stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id?: number; result?: { isError?: boolean; content: { text: string }[] } })
      .find((m) => m.id === 2);
    assert.ok(answer?.result && !answer.result.isError, `workspace_create answered: ${stdout}`);
    const { workspace_id } = JSON.parse(answer.result.content[0]!.text) as { workspace_id: string };
    try {
      assert.equal((await pyro.statusWorkspace(workspace_id)).state, "running", "created and recorded, not half-created");
      assert.equal((await pyro.execWorkspace(workspace_id, ["true"])).exit_code, 0);
    } finally {
      await pyro.deleteWorkspace(workspace_id);
    }
  });
});
