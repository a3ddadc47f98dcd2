import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

/**
 * Runs git in `cwd` for a test's fixture repositories: a fixed identity and branch name, and no
 * system or user config (HOME is the repository), so the host's git settings cannot change a test.
 */
export function git(cwd: string, ...args: string[]): string {
  const r = spawnSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], {
    cwd,
    encoding: "utf8",
    env: { PATH: process.env.PATH, HOME: cwd, GIT_CONFIG_NOSYSTEM: "1" },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}
