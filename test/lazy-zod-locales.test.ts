import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { lazyLocalesIndex } from "../src/cli/lazy-zod-locales.js";

const zodRoot = join(createRequire(import.meta.url).resolve("zod"), "..");
const realIndex = readFileSync(join(zodRoot, "v4", "locales", "index.js"), "utf8");
const HOOK = join(import.meta.dirname, "..", "src", "cli", "lazy-zod-locales.js");
const RECORDER = join(import.meta.dirname, "helpers", "record-modules.js");

/** The locale names an index exports, as ESM sees them (the export names, in order). */
function exportedNames(source: string): string[] {
  return [...source.matchAll(/^export (?:\{ default as |const )(\w+)/gm)].map((m) => m[1]!);
}

/** Runs `body` (an ES module) in a fresh node, with the rewrite installed first when `lazy`. */
function zodProcess(body: string, lazy: boolean): { stdout: string; modules: string[] } {
  const setup = lazy ? `import { deferZodLocales } from ${JSON.stringify(HOOK)}; deferZodLocales();\n` : "";
  const log = join(process.env.PYRO_HOME ?? "/tmp", `modules-${lazy}.txt`);
  const r = spawnSync(process.execPath, ["--import", RECORDER, "--input-type=module", "-e", `${setup}const { z } = await import("zod");\n${body}`], {
    encoding: "utf8",
    cwd: join(import.meta.dirname, ".."),
    env: { ...process.env, PYRO_TEST_MODULE_LOG: log },
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return { stdout: r.stdout, modules: (JSON.parse(readFileSync(log, "utf8")) as { modules: string[] }).modules };
}

describe("zod's locales load on first use in the CLI", () => {
  it("rewrites the installed zod's locale index to the same names, each loading its module when called", () => {
    const lazy = lazyLocalesIndex(realIndex);
    assert.ok(lazy, "the installed zod has the expected index layout");
    assert.deepEqual(exportedNames(lazy), exportedNames(realIndex));
    assert.ok(exportedNames(realIndex).length > 40);
  });

  it("behaves as zod did: English messages, every locale listed and usable; only English is loaded up front", () => {
    const body = `
      const message = () => z.object({ a: z.string() }).safeParse({ a: 1 }).error.issues[0].message;
      const english = message();
      const names = Object.keys(z.locales).sort();
      z.config(z.locales.fr());
      console.log(JSON.stringify({ english, names, french: message() }));`;
    const plain = zodProcess(body, false);
    const lazy = zodProcess(body, true);
    assert.deepEqual(JSON.parse(lazy.stdout), JSON.parse(plain.stdout));
    assert.match(JSON.parse(lazy.stdout).french, /invalide/);
    const locales = (modules: string[]) => modules.filter((url) => url.includes("/zod/v4/locales/")).map((url) => url.split("/").pop());
    assert.deepEqual(locales(lazy.modules).sort(), ["en.js", "fr.js", "index.js"], "English, the index, and French once asked for");
    assert.ok(locales(plain.modules).length > 40, "without the rewrite zod loads them all");
  });

  it("leaves an index of any other shape as it is", () => {
    const name = fc.stringMatching(/^[a-z][a-zA-Z]{0,5}$/);
    const line = name.map((n) => `export { default as ${n} } from "./${n}.js";`);
    fc.assert(
      fc.property(
        fc.array(line, { minLength: 1, maxLength: 8 }),
        fc.string({ maxLength: 40 }).filter((s) => !s.includes("\n")),
        fc.nat(),
        (lines, extra, at) => {
          const good = lazyLocalesIndex(lines.join("\n"));
          assert.deepEqual(exportedNames(good ?? ""), exportedNames(lines.join("\n")));
          // A line that is not a plain locale re-export (code, a comment, another form): no rewrite.
          if (!extra.trim() || /^export \{ default as [A-Za-z]\w* \} from "\.\/[\w-]+\.js";$/.test(extra.trim())) return;
          const mixed = [...lines];
          mixed.splice(at % (lines.length + 1), 0, extra);
          assert.equal(lazyLocalesIndex(mixed.join("\n")), undefined);
        },
      ),
      { numRuns: 200 },
    );
    assert.equal(lazyLocalesIndex(""), undefined);
    assert.equal(lazyLocalesIndex(`export * from "./en.js";`), undefined);
  });
});
