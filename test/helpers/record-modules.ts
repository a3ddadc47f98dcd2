/**
 * Preload (`node --import …/record-modules.js`) that writes the URL of every module the process
 * loads, one a line, to the file named by PYRO_TEST_MODULE_LOG when it exits: what a command's
 * start-up pays for, seen from outside.
 */
import { writeFileSync } from "node:fs";
import module from "node:module";

const log = process.env.PYRO_TEST_MODULE_LOG;
if (log) {
  const loaded: string[] = [];
  module.registerHooks({
    load(url, context, nextLoad) {
      loaded.push(url);
      return nextLoad(url, context);
    },
  });
  process.on("exit", () => writeFileSync(log, `${loaded.join("\n")}\n`));
}
