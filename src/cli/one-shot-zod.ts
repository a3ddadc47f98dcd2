import { deferZodLocales } from "./lazy-zod-locales.js";

/**
 * Loads zod for a CLI command, before any module that builds schemas:
 * - its non-English locales load on first use (see lazy-zod-locales.ts); the load hook that does
 *   it is held only while zod loads, so no other module pays for passing through it;
 * - its per-schema parser compiler is off. zod compiles every object schema into a specialised
 *   parser (`new Function`) on its first parse: a gain for a process that parses the same shapes
 *   many times (`pyro mcp serve`), a loss for a CLI command that parses each record and agent
 *   reply about once (a workspace record parses in about half the time without it). Validation
 *   is the same either way: the compiled parser is a fast path of the same checks. zod reads the
 *   setting as each schema is built, hence before the SDK loads.
 */
export async function loadZodForOneShot(): Promise<void> {
  const locales = deferZodLocales();
  try {
    const { z } = await import("zod");
    z.config({ jitless: true });
  } finally {
    locales.remove();
  }
}
