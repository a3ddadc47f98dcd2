/**
 * zod compiles every object schema into a specialised parser (`new Function`) on its first parse:
 * a gain for a process that parses the same shapes many times (`pyro mcp serve`), a loss for a CLI
 * command that parses each record and agent reply about once (the compile costs more than it
 * saves; a workspace record parses in about half the time without it). Validation is the same
 * either way: the compiled parser is a fast path of the same checks.
 *
 * zod reads the setting as each schema is built, so this must run before any module that builds
 * schemas is loaded: the CLI calls it before it loads the SDK.
 */
export async function loadZodForOneShot(): Promise<void> {
  const { z } = await import("zod");
  z.config({ jitless: true });
}
