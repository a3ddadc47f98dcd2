import { z } from "zod";
import { TOOL_CATALOG, type CatalogTool } from "./catalog.js";
import type { ToolAnnotations } from "./tool-definition.js";

/** Where the generated table sits in README.md (regenerate with `node scripts/update-readme-tools.mjs`). */
export const TOOL_TABLE_START = "<!-- tool-table:start (generated from src/mcp/catalog.ts by scripts/update-readme-tools.mjs; do not edit) -->";
export const TOOL_TABLE_END = "<!-- tool-table:end -->";

function effect(a: ToolAnnotations): string {
  if (a.readOnlyHint) return "read-only";
  return `${a.destructiveHint ? "destructive" : "additive"}${a.idempotentHint ? ", idempotent" : ""}`;
}

/** `name` required, `name?` optional, `name=default` defaulted; gated arguments say which profile has them. */
function argumentList(tool: CatalogTool): string {
  const schema = z.toJSONSchema(z.object(tool.input), { io: "input", unrepresentable: "any" }) as {
    properties?: Record<string, { default?: unknown }>;
    required?: string[];
  };
  const gated = new Set(Object.values(tool.gated ?? {}).flat());
  return Object.entries(schema.properties ?? {})
    .map(([name, property]) => {
      const shown = property.default !== undefined ? `${name}=${JSON.stringify(property.default)}` : schema.required?.includes(name) ? name : `${name}?`;
      return `\`${shown}\`${gated.has(name) ? "¹" : ""}`;
    })
    .join(", ");
}

/** The README's tool table, rendered from the catalogue. */
export function renderToolTable(): string {
  const rows = TOOL_CATALOG.map(
    (tool) =>
      `| \`${tool.name}\` | ${tool.profile} | ${effect(tool.annotations)} | ${argumentList(tool) || "—"} | ${tool.description.replaceAll("|", "\\|")} |`,
  );
  return [
    "| Tool | From profile | Effect | Arguments | What it does |",
    "| --- | --- | --- | --- | --- |",
    ...rows,
    "",
    "¹ only where the profile or mode offers it (workspace-full: machine shape, secrets and network, snapshots).",
  ].join("\n");
}

/** README text with the table between its markers replaced by `table`; throws when the markers are missing. */
export function withToolTable(readme: string, table: string): string {
  const start = readme.indexOf(TOOL_TABLE_START);
  const end = readme.indexOf(TOOL_TABLE_END);
  if (start < 0 || end < start) throw new Error(`README.md has no tool table markers (${TOOL_TABLE_START} … ${TOOL_TABLE_END})`);
  return `${readme.slice(0, start + TOOL_TABLE_START.length)}\n${table}\n${readme.slice(end)}`;
}
