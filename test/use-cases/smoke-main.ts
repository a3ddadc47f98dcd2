/**
 * `make smoke-use-cases` / `make smoke-<recipe>`: runs recipes through a real MCP stdio client on
 * real guests and prints a pass/fail table. Arguments: smoke target names or recipe ids (none: all).
 * Run with the isolated-home preload, so the smoke uses its own state and the shared build cache.
 */
import { RECIPES } from "./recipes.js";
import { formatTable, runRecipe, type RecipeOutcome } from "./smoke-runner.js";

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !RECIPES.some((r) => r.smokeTarget === w || r.id === w));
if (unknown.length) {
  process.stderr.write(`error: unknown recipe ${unknown.join(", ")}; known: ${RECIPES.map((r) => r.smokeTarget).join(", ")}\n`);
  process.exit(2);
}
const chosen = wanted.length ? RECIPES.filter((r) => wanted.includes(r.smokeTarget) || wanted.includes(r.id)) : RECIPES;
const outcomes: RecipeOutcome[] = [];
for (const recipe of chosen) {
  process.stderr.write(`[smoke] ${recipe.id} (pyro mcp serve --mode ${recipe.mode}) …\n`);
  const outcome = await runRecipe(recipe);
  process.stderr.write(`[smoke] ${recipe.id}: ${outcome.passed ? "PASS" : "FAIL"} in ${(outcome.ms / 1000).toFixed(1)} s\n`);
  outcomes.push(outcome);
}
process.stdout.write(formatTable(outcomes));
process.exitCode = outcomes.every((o) => o.passed) ? 0 : 1;
