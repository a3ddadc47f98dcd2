import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PYRO_FAILURE_EXIT } from "../src/cli/output.js";
import { cliWithModules, loadedAmong, NOT_FOR_A_RUNNING_WORKSPACE } from "./helpers/cli-modules.js";

// A well-formed id that names no workspace: the command loads its code and runs its start-up
// (crash-recovery sweep, lookup) before it fails, with no VM involved.
const MISSING = "ws-aaaaaaaaaaaaaaaaaaaa";

describe("CLI start-up loads what the command uses, not the whole SDK", () => {
  it("workspace exec: no archive, patch, boot or non-English-locale code", () => {
    const r = cliWithModules(["workspace", "exec", MISSING, "--", "true"]);
    assert.equal(r.code, PYRO_FAILURE_EXIT, r.stderr);
    assert.match(r.stderr, /WORKSPACE_NOT_FOUND/);
    assert.ok(
      r.modules.some((url) => url.endsWith("/src/workspaces/workspace-exec.js")),
      "the exec code was loaded (the command got as far as the workspace lookup)",
    );
    assert.deepEqual(loadedAmong(r.modules, NOT_FOR_A_RUNNING_WORKSPACE), []);
  });

  it("workspace diff --summary: no patch-making code", () => {
    const r = cliWithModules(["workspace", "diff", MISSING, "--summary"]);
    assert.equal(r.code, PYRO_FAILURE_EXIT, r.stderr);
    assert.match(r.stderr, /WORKSPACE_NOT_FOUND/);
    assert.ok(r.modules.some((url) => url.endsWith("/src/workspaces/file-diff.js")));
    assert.deepEqual(loadedAmong(r.modules, [/\/node_modules\/diff\//, /\/zod\/v4\/locales\/(?!en\.js$|index\.js$)/]), []);
  });

  it("workspace export: no archive library, sandbox, boot or diff code (the plain stream needs none)", () => {
    const r = cliWithModules(["workspace", "export", MISSING, ".", "--output", "/nonexistent/out.tar"]);
    assert.equal(r.code, PYRO_FAILURE_EXIT, r.stderr);
    assert.match(r.stderr, /WORKSPACE_NOT_FOUND/);
    assert.ok(r.modules.some((url) => url.endsWith("/src/workspaces/workspace-export.js")));
    const forbidden = [
      ...NOT_FOR_A_RUNNING_WORKSPACE,
      /\/src\/process\/host-sandbox\.js$/,
      /\/src\/workspaces\/workspace-boot\.js$/,
      /\/src\/workspaces\/workspace-diff\.js$/,
      /\/src\/workspaces\/guest-transfer\.js$/,
    ];
    assert.deepEqual(loadedAmong(r.modules, forbidden), []);
  });

  it("--version and --help load neither the SDK nor zod", () => {
    for (const args of [["--version"], ["--help"], ["workspace", "exec", "--help"]]) {
      const r = cliWithModules(args);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(loadedAmong(r.modules, [/\/src\/sdk\//, /\/node_modules\/zod\//]), [], args.join(" "));
    }
  });
});
