import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "./vm-fixtures.js";

const RECORDER = join(import.meta.dirname, "record-modules.js");

/**
 * Runs the CLI in a fresh process and returns what it printed, every module it loaded (file URLs
 * and builtins) and how many functions it compiled at run time.
 */
export function cliWithModules(args: string[]): { code: number | null; stdout: string; stderr: string; modules: string[]; compiledFunctions: number } {
  const dir = mkdtempSync(join(tmpdir(), "pyro-modules-"));
  try {
    const log = join(dir, "modules.txt");
    const r = spawnSync(process.execPath, ["--import", RECORDER, CLI, ...args], {
      encoding: "utf8",
      env: { ...process.env, PYRO_TEST_MODULE_LOG: log },
      timeout: 120_000,
    });
    const { modules, compiledFunctions } = JSON.parse(readFileSync(log, "utf8")) as { modules: string[]; compiledFunctions: number };
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, modules, compiledFunctions };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Code a workspace command that only talks to a running VM must not load: archives (tar), patch
 * making (jsdiff), zod's non-English locales, and what a boot needs (kernel, initramfs, templates).
 */
export const NOT_FOR_A_RUNNING_WORKSPACE: readonly RegExp[] = [
  /\/node_modules\/tar\//,
  /\/node_modules\/diff\//,
  /\/zod\/v4\/locales\/(?!en\.js$|index\.js$)/,
  /\/src\/guest-kernel\//,
  /\/src\/runtime\/guest-runtime\.js$/,
  /\/src\/runtime\/accelerator\.js$/,
  /\/src\/workspaces\/boot-templates\.js$/,
  /\/src\/workspaces\/fork-memory\.js$/,
];

/** The modules among `modules` that match one of `forbidden`. */
export function loadedAmong(modules: readonly string[], forbidden: readonly RegExp[]): string[] {
  return modules.filter((url) => forbidden.some((re) => re.test(url)));
}
