import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RunResult, ShellReadResult, WorkspaceCreateResult, WorkspaceExecResult, WorkspaceListResult } from "../src/sdk/index.js";
import * as sdk from "../src/sdk/index.js";

/** Compile-time equality: fails the build (not just the test) when a result type degrades to never/any. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const checks: [
  Equal<WorkspaceCreateResult["workspace_id"], string>,
  Equal<WorkspaceExecResult["exit_code"], number>,
  Equal<WorkspaceListResult["workspaces"][number]["workspace_id"], string>,
  Equal<ShellReadResult["next_cursor"], number>,
  Equal<RunResult["execution_mode"], "guest" | "host_compat">,
] = [true, true, true, true, true];

describe("the SDK's public surface", () => {
  it("exports the result types of every method and the limits the faces share", () => {
    assert.ok(checks.every(Boolean));
    assert.equal(sdk.MACHINE_SHAPE_LIMITS.memMib.min, 256);
    assert.equal(typeof sdk.Pyro, "function");
  });
});
