/**
 * The recipe docs and the smoke pack say the same thing: each doc names its mode, host and smoke
 * target and lists exactly the tool calls its scenario makes; each mode serves those tools; the
 * Makefile has one target per recipe; the README links the recipes.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { MODES } from "../src/mcp/profiles.js";
import { RECIPES } from "./use-cases/recipes.js";

const ROOT = join(import.meta.dirname, "..", "..");
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");

/** The tools named first on each numbered line of a doc's "## Tool sequence" section. */
function documentedSequence(doc: string): string[] {
  const section = doc.split(/^## Tool sequence$/m)[1]?.split(/^## /m)[0] ?? "";
  return [...section.matchAll(/^\d+\. `([a-z_]+)`/gm)].map((m) => m[1]!);
}

describe("use-case recipe docs and smoke pack", () => {
  for (const recipe of RECIPES) {
    it(`${recipe.id}: the doc matches the smoke scenario`, () => {
      const doc = read(`docs/use-cases/${recipe.id}.md`);
      assert.ok(doc.includes(`pyro host connect ${recipe.host} --mode ${recipe.mode}`), "names the host command with its mode");
      assert.ok(doc.includes(`make ${recipe.smokeTarget}`), "names its smoke target");
      assert.deepEqual(
        documentedSequence(doc),
        recipe.steps.map((s) => s.tool),
      );
      if (recipe.startup === "project-path") assert.ok(doc.includes("--project-path"));
    });

    it(`${recipe.id}: --mode ${recipe.mode} serves every tool the recipe calls`, () => {
      const served = new Set<string>(MODES[recipe.mode].tools);
      assert.deepEqual(
        recipe.steps.map((s) => s.tool).filter((t) => !served.has(t)),
        [],
      );
    });
  }

  it("the Makefile has one smoke target per recipe, and the docs index and README list them", () => {
    const targets = /^SMOKE_TARGETS := (.*)$/m.exec(read("Makefile"))?.[1]?.split(/\s+/) ?? [];
    assert.deepEqual([...targets].sort(), RECIPES.map((r) => r.smokeTarget).sort());
    const index = read("docs/use-cases/README.md");
    const readme = read("README.md");
    for (const recipe of RECIPES) {
      assert.ok(index.includes(`(${recipe.id}.md)`) && index.includes(`make ${recipe.smokeTarget}`), recipe.id);
      assert.ok(readme.includes(`docs/use-cases/${recipe.id}.md`), `README links ${recipe.id}`);
    }
    assert.ok(readme.includes("make smoke-use-cases"));
  });

  it("the smoke runner refuses an unknown recipe by name, listing the known ones", () => {
    const r = spawnSync(process.execPath, [join(ROOT, "dist", "test", "use-cases", "smoke-main.js"), "smoke-nope"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown recipe smoke-nope; known: smoke-cold-start-validation, smoke-repro-fix-loop/);
  });
});
