import module from "node:module";

/**
 * zod's every entry point re-exports all of its ~60 error-message locales (`z.locales`), and each
 * is its own ES module: two thirds of the modules a workspace command loads for zod, each paid in
 * resolution and linking on every CLI start. pyro only ever uses English, which zod's schemas load
 * on their own. This rewrites that one index, as it loads, so that each locale is a function that
 * loads its module on first call: `z.locales.xx()` returns the same thing as before, only later.
 */

/** The only line the index is made of; anything else means another zod layout: left as it is. */
const LOCALE_EXPORT = /^export \{ default as ([A-Za-z]\w*) \} from "(\.\/[\w-]+\.js)";$/;
const LOCALES_INDEX = "/zod/v4/locales/index.js";

/** The index rewritten to load each locale on first use, or undefined if it is not the expected shape. */
export function lazyLocalesIndex(source: string): string | undefined {
  const lines = source.split("\n").filter((line) => line.trim() !== "");
  const exports = lines.map((line) => LOCALE_EXPORT.exec(line.trim()));
  if (exports.length === 0 || exports.some((match) => !match)) return undefined;
  const lazy = exports.map((match) => {
    const [, name, file] = match!;
    return `export const ${name} = (...args) => load(${JSON.stringify(file)}).default(...args);`;
  });
  return ['import { createRequire } from "node:module";', "const load = createRequire(import.meta.url);", ...lazy, ""].join("\n");
}

/**
 * Installs the rewrite for this process until `remove` is called: every module loaded meanwhile
 * passes through the hook, so it is meant to be held only while zod loads. A Node without
 * synchronous module hooks loads zod as it is.
 */
export function deferZodLocales(): { remove: () => void } {
  if (typeof module.registerHooks !== "function") return { remove: () => undefined };
  const hooks = module.registerHooks({
    load(url, context, nextLoad) {
      const result = nextLoad(url, context);
      if (!url.startsWith("file:") || !url.endsWith(LOCALES_INDEX) || result.source === undefined) return result;
      const source = lazyLocalesIndex(typeof result.source === "string" ? result.source : Buffer.from(result.source as Uint8Array).toString("utf8"));
      return source === undefined ? result : { ...result, source };
    },
  });
  return { remove: () => hooks.deregister() };
}
