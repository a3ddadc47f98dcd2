/**
 * Preload (`node --import …/record-modules.js`) that writes, as JSON to the file named by
 * PYRO_TEST_MODULE_LOG when the process exits, what its start-up paid for, seen from outside: the
 * URL of every module it loaded, and how many functions it compiled at run time (`new Function`,
 * what zod's parser compiler uses).
 */
import { writeFileSync } from "node:fs";
import module from "node:module";

const log = process.env.PYRO_TEST_MODULE_LOG;
if (log) {
  const modules: string[] = [];
  let compiledFunctions = 0;
  module.registerHooks({
    load(url, context, nextLoad) {
      modules.push(url);
      return nextLoad(url, context);
    },
  });
  globalThis.Function = new Proxy(Function, {
    construct(target, args, newTarget) {
      compiledFunctions++;
      return Reflect.construct(target, args, newTarget);
    },
    apply(target, self, args) {
      compiledFunctions++;
      return Reflect.apply(target, self, args);
    },
  });
  process.on("exit", () => writeFileSync(log, JSON.stringify({ modules, compiledFunctions })));
}
