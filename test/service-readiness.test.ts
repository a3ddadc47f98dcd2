import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { createPyroMcpServer } from "../src/mcp/server.js";
import { Pyro } from "../src/sdk/pyro.js";
import { chooseReadiness, type ReadinessSpelling } from "../src/workspaces/service-readiness.js";
import { SERVICE_DEFAULTS } from "../src/workspaces/workspace-limits.js";
import { toolText } from "./helpers/mcp-client.js";

const SPELLING: ReadinessSpelling = { file: "f", tcp: "t", http: "h", command: "c", timeoutSeconds: "ts", intervalMs: "iv" };

function refusal(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (error) {
    assert.ok(isPyroError(error) && error.code === "INVALID_ARGUMENT", String(error));
    return error.message;
  }
}

describe("service readiness options: one rule for the CLI and MCP", () => {
  it("takes at most one check, a timeout or interval only with one, and a timeout within the bound", () => {
    const text = fc.string({ minLength: 1, maxLength: 8 });
    fc.assert(
      fc.property(
        fc.option(text, { nil: undefined }),
        fc.option(fc.record({ port: fc.integer({ min: 1, max: 65_535 }) }), { nil: undefined }),
        fc.option(text, { nil: undefined }),
        fc.option(text, { nil: undefined }),
        fc.option(fc.double({ min: -10, max: 2 * SERVICE_DEFAULTS.readyTimeoutMaxSeconds, noNaN: true }), { nil: undefined }),
        fc.option(fc.integer({ min: 10, max: 60_000 }), { nil: undefined }),
        (file, tcp, http, command, timeoutSeconds, intervalMs) => {
          const given = [file, tcp, http, command].filter((v) => v !== undefined).length;
          const message = refusal(() => chooseReadiness({ file, tcp, http, command, timeoutSeconds, intervalMs }, SPELLING));
          if (given > 1) return assert.equal(message, "give at most one of f, t, h, c");
          if (given === 0 && (timeoutSeconds !== undefined || intervalMs !== undefined))
            return assert.match(message ?? "", /^ts and iv need a readiness check: add f, t, h or c$/);
          const inBound = timeoutSeconds === undefined || (timeoutSeconds > 0 && timeoutSeconds <= SERVICE_DEFAULTS.readyTimeoutMaxSeconds);
          if (!inBound) return assert.match(message ?? "", /^ts must be between 0 and \d+ seconds/);
          assert.equal(message, undefined);
          const chosen = chooseReadiness({ file, tcp, http, command, timeoutSeconds, intervalMs }, SPELLING);
          assert.equal(chosen.readiness?.type, file ? "file" : tcp ? "tcp" : http ? "http" : command ? "command" : undefined);
          assert.equal(chosen.readyTimeoutSeconds, timeoutSeconds);
          assert.equal(chosen.readyIntervalMs, intervalMs);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("refuses service_start's ready_timeout_seconds without a check over MCP, instead of ignoring it", async () => {
    const server = createPyroMcpServer({ pyro: new Pyro(), profile: "workspace-full" });
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    await server.connect(serverSide);
    const client = new Client({ name: "readiness-test", version: "1" });
    await client.connect(clientSide);
    try {
      const r = await client.callTool({ name: "service_start", arguments: { workspace_id: "w", name: "s", command: "true", ready_timeout_seconds: 5 } });
      assert.equal(r.isError, true);
      assert.match(
        toolText(r),
        /^INVALID_ARGUMENT: ready_timeout_seconds needs a readiness check: add ready_file, ready_tcp_port, ready_http_url or ready_command/,
      );
      const two = await client.callTool({
        name: "service_start",
        arguments: { workspace_id: "w", name: "s", command: "true", ready_file: "a", ready_command: "true" },
      });
      assert.match(toolText(two), /^INVALID_ARGUMENT: give at most one of ready_file, ready_tcp_port, ready_http_url, ready_command/);
      const fine = await client.callTool({
        name: "service_start",
        arguments: { workspace_id: "no-such-workspace", name: "s", command: "true", ready_file: "a", ready_timeout_seconds: 5 },
      });
      assert.match(toolText(fine), /^WORKSPACE_NOT_FOUND: /);
    } finally {
      await client.close();
    }
  });
});
