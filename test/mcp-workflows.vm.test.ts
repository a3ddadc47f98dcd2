import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI } from "./helpers/vm-fixtures.js";
import { connectStdio, toolJson, toolText } from "./helpers/mcp-client.js";
import { FIX_PATCH, makeSeedRepo } from "./helpers/workspace-fixtures.js";

const TIMEOUT = { timeout: 240_000 };
const BIN = join(import.meta.dirname, "..", "..", "node_modules", ".bin");

describe("[vm] MCP workflows on real VMs", () => {
  let seed: Awaited<ReturnType<typeof makeSeedRepo>>;
  before(async () => {
    seed = await makeSeedRepo();
  });
  after(async () => {
    await seed.dispose();
  });

  it("runs the repro-fix loop end to end: create with seed, failing test, patch, passing test, diff, delete", TIMEOUT, async () => {
    const { client } = await connectStdio(["--mode", "repro-fix"]);
    try {
      const ws = toolJson<{ workspace_id: string }>(await client.callTool({ name: "workspace_create", arguments: { seed_path: seed.dir } }));
      const failing = toolJson<{ exit_code: number; stderr: string }>(
        await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "./test.sh" } }),
      );
      assert.notEqual(failing.exit_code, 0);
      assert.match(failing.stderr, /AssertionError/);
      const source = toolJson<{ content: string }>(
        await client.callTool({ name: "workspace_file_read", arguments: { workspace_id: ws.workspace_id, path: "src/calc.py" } }),
      );
      assert.match(source.content, /return a - b/);
      toolJson(await client.callTool({ name: "workspace_patch_apply", arguments: { workspace_id: ws.workspace_id, patch: FIX_PATCH } }));
      const passing = toolJson<{ exit_code: number; stdout: string }>(
        await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "./test.sh" } }),
      );
      assert.equal(passing.exit_code, 0);
      assert.equal(passing.stdout, "tests pass\n");
      const diff = toolJson<{ patch: string; files: { path: string }[] }>(
        await client.callTool({ name: "workspace_diff", arguments: { workspace_id: ws.workspace_id } }),
      );
      assert.ok(diff.files.some((f) => f.path === "src/calc.py"));
      assert.match(diff.patch, /\+    return a \+ b/);
      const stalePatch = await client.callTool({ name: "workspace_patch_apply", arguments: { workspace_id: ws.workspace_id, patch: FIX_PATCH } });
      assert.equal(stalePatch.isError, true);
      assert.match(toolText(stalePatch), /PATCH_FAILED: hunk 1 of 1 for src\/calc\.py.*\nNext step: Read the file/s);
      toolJson(await client.callTool({ name: "workspace_delete", arguments: { workspace_id: ws.workspace_id } }));
    } finally {
      await client.close();
    }
  });

  it("reports progress during a long workspace_exec when the client asks", TIMEOUT, async () => {
    const { client } = await connectStdio();
    try {
      const ws = toolJson<{ workspace_id: string; workspace_seed: { origin_kind: string; files: number; note?: string } }>(
        await client.callTool({ name: "workspace_create", arguments: {} }),
      );
      // Served from outside any checkout: no project, so an empty /workspace, and the result says why.
      assert.equal(ws.workspace_seed.origin_kind, "empty");
      assert.equal(ws.workspace_seed.files, 0);
      assert.match(ws.workspace_seed.note ?? "", /no seed_path was given and there is no project/);
      const progress: string[] = [];
      const r = await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "sleep 5; echo done" } }, undefined, {
        onprogress: (p) => void progress.push(p.message ?? ""),
        timeout: 120_000,
      });
      assert.equal(toolJson<{ stdout: string }>(r).stdout, "done\n");
      assert.ok(progress.length >= 1, "at least one progress notification");
      assert.match(progress[0]!, /running for \d+ s/);
      toolJson(await client.callTool({ name: "workspace_delete", arguments: { workspace_id: ws.workspace_id } }));
    } finally {
      await client.close();
    }
  });

  it("forks a workspace over workspace_fork (workspace-full): copies with the source's files, named in order", TIMEOUT, async () => {
    const { client } = await connectStdio(["--profile", "workspace-full"]);
    const made: string[] = [];
    try {
      const ws = toolJson<{ workspace_id: string }>(await client.callTool({ name: "workspace_create", arguments: {} }));
      made.push(ws.workspace_id);
      toolJson(await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "echo installed > deps.txt" } }));
      const fork = toolJson<{ memory: string; forks: { workspace_id: string; name: string | null }[] }>(
        await client.callTool({ name: "workspace_fork", arguments: { workspace_id: ws.workspace_id, count: 2, names: ["try-a"] } }),
      );
      made.push(...fork.forks.map((f) => f.workspace_id));
      assert.deepEqual(
        fork.forks.map((f) => f.name),
        ["try-a", null],
      );
      for (const f of fork.forks) {
        const r = toolJson<{ stdout: string }>(
          await client.callTool({ name: "workspace_exec", arguments: { workspace_id: f.workspace_id, command: "cat deps.txt" } }),
        );
        assert.equal(r.stdout, "installed\n");
      }
      const refused = await client.callTool({ name: "workspace_fork", arguments: { workspace_id: ws.workspace_id, count: 99 } });
      assert.equal(refused.isError, true);
    } finally {
      for (const id of made) await client.callTool({ name: "workspace_delete", arguments: { workspace_id: id } }).catch(() => undefined);
      await client.close();
    }
  });

  it("answers an independent client: the MCP Inspector CLI", TIMEOUT, () => {
    const list = spawnSync(join(BIN, "mcp-inspector"), ["--cli", process.execPath, CLI, "mcp", "serve", "--profile", "vm-run", "--method", "tools/list"], {
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(list.status, 0, list.stderr);
    assert.deepEqual(
      (JSON.parse(list.stdout) as { tools: { name: string }[] }).tools.map((t) => t.name),
      ["vm_run"],
    );
    const call = spawnSync(
      join(BIN, "mcp-inspector"),
      [
        "--cli",
        process.execPath,
        CLI,
        "mcp",
        "serve",
        "--profile",
        "vm-run",
        "--method",
        "tools/call",
        "--tool-name",
        "vm_run",
        "--tool-arg",
        "command=uname -n",
      ],
      { encoding: "utf8", timeout: 120_000 },
    );
    assert.equal(call.status, 0, call.stderr);
    const result = JSON.parse(JSON.parse(call.stdout).content[0].text);
    // Every one-shot VM gets its own hostname (clones of one template must not look alike).
    assert.match(result.stdout, /^pyro-[0-9a-f]{8}\n$/);
    assert.equal(result.execution_mode, "guest");
  });

  it("passes Claude Code's own health check with the config 'pyro host connect' wrote", TIMEOUT, async () => {
    const home = await mkdtemp(join(tmpdir(), "pyro-claude-home-"));
    try {
      const env = { ...process.env, HOME: home, DISABLE_TELEMETRY: "1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", DISABLE_AUTOUPDATER: "1" };
      const connect = spawnSync(process.execPath, [CLI, "host", "connect", "claude-code", "--mode", "repro-fix"], { encoding: "utf8", env });
      assert.equal(connect.status, 0, connect.stderr);
      const list = spawnSync(join(BIN, "claude"), ["mcp", "list"], { encoding: "utf8", env, cwd: home, timeout: 120_000 });
      assert.match(list.stdout, /^pyro: .*mcp serve --mode repro-fix - ✔ Connected$/m, list.stdout + list.stderr);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
