#!/usr/bin/env node
import { lstatSync, mkdirSync } from "node:fs";
import module from "node:module";
import { join } from "node:path";
import { resolvePaths } from "../paths.js";

/**
 * pyro's entry point: turns on Node's on-disk compile cache before the CLI's modules load. A fresh
 * CLI process (every `pyro run`) otherwise compiles the same ~65 modules, zod among them, on every
 * start. Static imports load before a module's body runs, so the program itself is imported below.
 */

/**
 * The cache holds code Node runs: it lives in pyro's own cache directory, and only in a directory
 * that is ours and writable by no one else (else no cache: slower, never unsafe).
 */
function enableCompileCache(): void {
  // Older Node releases have no compile cache; PYRO_HOME-less environments without HOME still run.
  if (typeof module.enableCompileCache !== "function") return;
  try {
    const dir = join(resolvePaths().cacheDir, "node-compile-cache");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) return;
    // Node makes its per-Node-version directory inside as it enables the cache, with the process's
    // umask: owner-only, like everything else in pyro's home.
    const umask = process.umask(0o077);
    try {
      module.enableCompileCache(dir);
    } finally {
      process.umask(umask);
    }
  } catch {
    // No cache: the CLI works the same, only slower to start.
  }
}

enableCompileCache();
const { runCli } = await import("./program.js");
await runCli();
