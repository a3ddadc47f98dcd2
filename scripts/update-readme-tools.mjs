#!/usr/bin/env node
// Regenerates the MCP tool table in README.md from the tool catalogue (src/mcp/catalog.ts).
// Needs the build (dist/). With --check, changes nothing and exits 1 when README.md is stale.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { renderToolTable, withToolTable } = await import(join(root, "dist/src/mcp/tool-table.js"));
const path = join(root, "README.md");
const current = readFileSync(path, "utf8");
const next = withToolTable(current, renderToolTable());
if (process.argv.includes("--check")) {
  if (next !== current) {
    console.error("README.md's tool table is stale: run node scripts/update-readme-tools.mjs");
    process.exit(1);
  }
} else if (next !== current) {
  writeFileSync(path, next);
  console.log("README.md: tool table updated");
}
