import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { cliWithModules, loadedAmong, NOT_FOR_A_RUNNING_WORKSPACE } from "./helpers/cli-modules.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

describe("[vm] a CLI command on a running workspace reaches its VM without preparing a boot", () => {
  let id: string;
  before(async () => {
    id = (await pyro.createWorkspace("debian:12")).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
  });

  it("exec and diff --summary answer as before, loading no boot, archive or patch code", TIMEOUT, async () => {
    const exec = cliWithModules(["workspace", "exec", id, "--json", "--", "sh", "-c", "echo hello > note.txt && cat note.txt"]);
    assert.equal(exec.code, 0, exec.stderr);
    const result = JSON.parse(exec.stdout) as { exit_code: number; stdout: string; cwd: string; sequence: number };
    assert.deepEqual([result.exit_code, result.stdout, result.cwd, result.sequence], [0, "hello\n", "/workspace", 1]);
    assert.deepEqual(loadedAmong(exec.modules, NOT_FOR_A_RUNNING_WORKSPACE), []);
    // Each record and reply is parsed about once: zod's per-schema parser compiler is off in the CLI.
    assert.equal(exec.compiledFunctions, 0);
    // The command log and the record were written as the SDK writes them.
    assert.equal((await pyro.statusWorkspace(id)).command_count, 1);
    assert.equal((await pyro.logsWorkspace(id)).commands[0]?.stdout, "hello\n");

    const diff = cliWithModules(["workspace", "diff", id, "--summary"]);
    assert.equal(diff.code, 0, diff.stderr);
    assert.equal(diff.stdout, "A note.txt\n");
    assert.equal(diff.compiledFunctions, 0);
    assert.deepEqual(loadedAmong(diff.modules, [/\/node_modules\/diff\//, /\/zod\/v4\/locales\/(?!en\.js$|index\.js$)/]), []);
  });
});
