/**
 * The smoke pack in CI: every documented use-case recipe, end to end through a real MCP stdio
 * client on real guests (the same scenarios `make smoke-use-cases` runs).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RECIPE_BUDGET_MS, RECIPES } from "./use-cases/recipes.js";
import { runRecipe } from "./use-cases/smoke-runner.js";

describe("[vm] use-case recipes over MCP stdio", () => {
  for (const recipe of RECIPES) {
    it(`${recipe.id} (--mode ${recipe.mode})`, { timeout: 240_000 }, async () => {
      // Twice the smoke budget: the suite runs two VM test files at once on a 2-core machine.
      const outcome = await runRecipe(recipe, { budgetMs: 2 * RECIPE_BUDGET_MS });
      assert.ok(outcome.passed, outcome.failure);
      console.log(`${recipe.id}: ${outcome.stepsDone} steps in ${(outcome.ms / 1000).toFixed(1)} s`);
    });
  }
});
