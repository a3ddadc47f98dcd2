/**
 * Project-aware startup over MCP on real guests: a clean clone of --repo-url at --repo-ref, and a
 * checkout with a file that vanished (skipped and listed, the create still succeeds).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connectStdio, toolJson } from "./helpers/mcp-client.js";
import { git } from "./helpers/git-fixture.js";

const TIMEOUT = { timeout: 180_000 };

interface Seeded {
  workspace_id: string;
  workspace_seed: {
    origin_kind: string;
    origin_ref: string;
    commit: string | null;
    files: number;
    skipped_count: number;
    skipped: { path: string; reason: string }[];
  };
}

describe("[vm] project-aware workspace_create over MCP", () => {
  let repo: string;
  let v1: string;
  before(async () => {
    repo = await mkdtemp(join(tmpdir(), "pyro-seed-repo-"));
    await mkdir(join(repo, "src"));
    await writeFile(join(repo, "src", "main.py"), "print('v1')\n");
    await writeFile(join(repo, "gone.txt"), "tracked, then deleted\n");
    git(repo, "init", "-q");
    git(repo, "add", "-A");
    git(repo, "commit", "-q", "-m", "v1");
    git(repo, "tag", "v1");
    v1 = git(repo, "rev-parse", "HEAD");
    await writeFile(join(repo, "src", "main.py"), "print('v2')\n");
    git(repo, "commit", "-q", "-am", "v2");
    await unlink(join(repo, "gone.txt"));
  });
  after(async () => {
    await rm(repo, { recursive: true, force: true });
  });

  it("seeds from a clean clone of --repo-url at --repo-ref", TIMEOUT, async () => {
    const url = `file://${repo}`;
    const { client } = await connectStdio(["--repo-url", url, "--repo-ref", "v1"]);
    try {
      const ws = toolJson<Seeded>(await client.callTool({ name: "workspace_create", arguments: {} }));
      assert.deepEqual([ws.workspace_seed.origin_kind, ws.workspace_seed.origin_ref, ws.workspace_seed.commit], ["repo_url", `${url}#v1`, v1]);
      const run = toolJson<{ stdout: string }>(
        await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "python3 src/main.py; cat gone.txt" } }),
      );
      assert.equal(run.stdout, "v1\ntracked, then deleted\n", "the tag's tree, not the working tree");
      toolJson(await client.callTool({ name: "workspace_delete", arguments: { workspace_id: ws.workspace_id } }));
    } finally {
      await client.close();
    }
  });

  it("skips a tracked file that vanished from the checkout, lists it, and still creates", TIMEOUT, async () => {
    const { client } = await connectStdio([], {}, join(repo, "src"));
    try {
      const ws = toolJson<Seeded>(await client.callTool({ name: "workspace_create", arguments: {} }));
      assert.deepEqual([ws.workspace_seed.origin_kind, ws.workspace_seed.origin_ref], ["project_path", repo]);
      assert.equal(ws.workspace_seed.skipped_count, 1);
      assert.deepEqual(ws.workspace_seed.skipped, [{ path: "gone.txt", reason: "vanished before it could be read" }]);
      const run = toolJson<{ stdout: string }>(
        await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "python3 src/main.py" } }),
      );
      assert.equal(run.stdout, "v2\n");
      toolJson(await client.callTool({ name: "workspace_delete", arguments: { workspace_id: ws.workspace_id } }));
    } finally {
      await client.close();
    }
  });

  it("creates from a checkout with nothing to seed yet (a fresh git init): /workspace starts empty", TIMEOUT, async () => {
    const fresh = await mkdtemp(join(tmpdir(), "pyro-seed-fresh-"));
    git(fresh, "init", "-q");
    const { client } = await connectStdio([], {}, fresh);
    try {
      const ws = toolJson<Seeded>(await client.callTool({ name: "workspace_create", arguments: {} }));
      assert.deepEqual([ws.workspace_seed.origin_kind, ws.workspace_seed.origin_ref, ws.workspace_seed.files], ["project_path", fresh, 0]);
      const run = toolJson<{ stdout: string }>(
        await client.callTool({ name: "workspace_exec", arguments: { workspace_id: ws.workspace_id, command: "ls -A /workspace | wc -l" } }),
      );
      assert.equal(run.stdout.trim(), "0");
      toolJson(await client.callTool({ name: "workspace_delete", arguments: { workspace_id: ws.workspace_id } }));
    } finally {
      await client.close();
      await rm(fresh, { recursive: true, force: true });
    }
  });
});
