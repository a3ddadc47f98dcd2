/**
 * Runs a use-case recipe the way a chat host does: a real MCP client (the SDK's) over stdio to a
 * spawned `pyro mcp serve --mode <mode>`, on real guests, one tool call per step.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { CLI } from "../helpers/vm-fixtures.js";
import { makeFixtureProject } from "./fixture-repo.js";
import { RECIPE_BUDGET_MS, type RecipeState, type UseCaseRecipe } from "./recipes.js";

export interface RecipeOutcome {
  recipe: UseCaseRecipe;
  passed: boolean;
  ms: number;
  /** The step that failed ("3/11 workspace_exec: …") and why; the server's last stderr lines. */
  failure?: string;
  stepsDone: number;
}

/** Keeps the last `max` characters of a stream (the server's stderr, for a failure report). */
function tail(max: number) {
  let text = "";
  return {
    push: (chunk: Buffer | string) => {
      text = (text + chunk.toString()).slice(-max);
    },
    get: () => text,
  };
}

function resultText(result: unknown): string {
  return ((result as { content?: { type: string; text?: string }[] }).content ?? []).map((c) => c.text ?? "").join("");
}

/** The `pyro mcp serve` command line and directory a recipe's startup stands for. */
export function serveCommand(recipe: UseCaseRecipe, project: string, elsewhere: string): { args: string[]; cwd: string } {
  const args = [CLI, "mcp", "serve", "--mode", recipe.mode];
  switch (recipe.startup) {
    case "cwd":
      return { args, cwd: project };
    case "project-path":
      return { args: [...args, "--project-path", project], cwd: elsewhere };
    case "none":
      return { args, cwd: elsewhere };
  }
}

/**
 * Runs one recipe end to end; never throws (a failure is an outcome), and taking longer than the
 * budget is a failure. Leaves no workspace behind.
 */
export async function runRecipe(recipe: UseCaseRecipe, options: { budgetMs?: number } = {}): Promise<RecipeOutcome> {
  const budgetMs = options.budgetMs ?? RECIPE_BUDGET_MS;
  const started = Date.now();
  const fixture = await makeFixtureProject(recipe.project);
  const outDir = await mkdtemp(join(tmpdir(), "pyro-recipe-out-"));
  const state: RecipeState = { project: fixture.dir, outDir, found: {} };
  const stderr = tail(2000);
  const { args, cwd } = serveCommand(recipe, fixture.dir, outDir);
  const transport = new StdioClientTransport({ command: process.execPath, args, cwd, env: process.env as Record<string, string>, stderr: "pipe" });
  transport.stderr?.on("data", stderr.push);
  const client = new Client({ name: "pyro-use-case-smoke", version: "1.0.0" });
  const created = new Set<string>();
  let stepsDone = 0;
  let failure: string | undefined;
  try {
    await client.connect(transport);
    for (const [index, step] of recipe.steps.entries()) {
      const where = `step ${index + 1}/${recipe.steps.length} ${step.tool} (${step.purpose})`;
      const callArgs = step.args(state);
      const result = await client.callTool({ name: step.tool, arguments: callArgs }, undefined, { timeout: budgetMs });
      if (result.isError) throw new Error(`${where}: tool error: ${resultText(result)}`);
      const json = JSON.parse(resultText(result));
      if (step.tool === "workspace_create") created.add(json.workspace_id);
      if (step.tool === "workspace_delete") created.delete(json.workspace_id);
      try {
        await step.check?.(json, state);
      } catch (error) {
        throw new Error(`${where}: ${(error as Error).message}`);
      }
      stepsDone++;
    }
  } catch (error) {
    failure = (error as Error).message;
  } finally {
    // A failed recipe still deletes what it created, through the same server.
    for (const id of created) await client.callTool({ name: "workspace_delete", arguments: { workspace_id: id } }).catch(() => undefined);
    await client.close().catch(() => undefined);
    await fixture.dispose();
    await rm(outDir, { recursive: true, force: true });
  }
  const ms = Date.now() - started;
  if (!failure && ms > budgetMs) failure = `took ${(ms / 1000).toFixed(1)} s, over the ${budgetMs / 1000} s budget`;
  if (failure && stderr.get().trim()) failure += `\n--- pyro mcp serve stderr (tail) ---\n${stderr.get().trim()}`;
  return { recipe, passed: !failure, ms, stepsDone, ...(failure ? { failure } : {}) };
}

/** The pass/fail table `make smoke-use-cases` prints. */
export function formatTable(outcomes: RecipeOutcome[]): string {
  const rows = [
    ["recipe", "mode", "steps", "time", "result"],
    ...outcomes.map((o) => [
      o.recipe.id,
      o.recipe.mode,
      `${o.stepsDone}/${o.recipe.steps.length}`,
      `${(o.ms / 1000).toFixed(1)} s`,
      o.passed ? "PASS" : "FAIL",
    ]),
  ];
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
  const lines = rows.map((r) =>
    r
      .map((cell, col) => cell.padEnd(widths[col]!))
      .join("  ")
      .trimEnd(),
  );
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  const failures = outcomes.filter((o) => !o.passed).map((o) => `\n${o.recipe.id}: ${o.failure}`);
  return lines.join("\n") + "\n" + failures.join("\n") + (failures.length ? "\n" : "");
}
