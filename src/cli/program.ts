import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command, CommanderError } from "commander";
import { packageRoot } from "../paths.js";
import { handleTerminationSignals } from "../process/exit-cleanup.js";
import type { Pyro } from "../sdk/pyro.js";
import { registerDailyLoopCommands } from "./commands/daily-loop-commands.js";
import { registerDoctorCommand } from "./commands/doctor-command.js";
import { registerEnvCommands } from "./commands/env-commands.js";
import { registerHostCommands } from "./commands/host-commands.js";
import { registerMcpCommands } from "./commands/mcp-command.js";
import { registerRunCommand } from "./commands/run-command.js";
import { registerWorkspaceCommands } from "./commands/workspace-commands.js";
import { damagedArgument } from "./argv-encoding.js";
import { reportError, USAGE_EXIT } from "./output.js";

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

const EPILOG = `
Suggested first steps:
  pyro doctor
  pyro env list
  pyro env pull debian:12
  pyro prepare debian:12              # warm the daily loop and prove it
  pyro demo
  pyro run debian:12 -- git --version
  pyro mcp serve                      # then connect a chat host: pyro host connect claude-code

Persistent workspaces:
  pyro workspace create debian:12 --seed-path ./repo --id-only
  pyro workspace exec WORKSPACE -- make test
  pyro workspace patch apply WORKSPACE --patch-file fix.diff
  pyro workspace diff WORKSPACE
  pyro workspace snapshot create WORKSPACE checkpoint
  pyro workspace reset WORKSPACE --snapshot checkpoint
  pyro workspace export WORKSPACE src --output ./src.tar

Every command runs inside a real microVM (QEMU microvm; KVM when usable, else TCG emulation).`;

const HELP_HINT = "(run with --help for usage)";

export async function main(argv: string[]): Promise<number> {
  handleTerminationSignals();
  const damaged = damagedArgument(argv);
  if (damaged) return reportUsageError(damaged);
  let exitCode = 0;
  // Commander prints the usage errors it finds while parsing; a handler's own usage error
  // (InvalidArgumentError thrown in an action) reaches us unprinted and is printed here.
  let usageReported = false;
  const setExitCode = (code: number) => {
    exitCode = code;
  };
  // The SDK (and through it every capability) loads on first use: `--help` or a one-shot run
  // should not pay for the modules of workspaces, MCP or registries.
  let instance: Promise<Pyro> | undefined;
  const pyro = () =>
    (instance ??= import("./one-shot-zod.js")
      .then(({ loadZodForOneShot }) => loadZodForOneShot())
      .then(() => import("../sdk/pyro.js"))
      .then(({ Pyro: Sdk }) => new Sdk()));
  const program = new Command()
    .name("pyro")
    .description("Disposable, isolated Linux microVM workspaces for coding agents.")
    .version(packageVersion(), "--version")
    .enablePositionalOptions()
    .showHelpAfterError(HELP_HINT)
    // Before any subcommand exists: subcommands copy these settings when they are created.
    .configureOutput({
      outputError: (message, write) => {
        usageReported = true;
        write(message);
      },
    })
    .exitOverride()
    .addHelpText("after", EPILOG);
  registerRunCommand(program, pyro, setExitCode);
  registerEnvCommands(program, pyro);
  registerDoctorCommand(program, pyro, setExitCode);
  registerDailyLoopCommands(program, pyro, setExitCode);
  registerWorkspaceCommands(program, pyro, setExitCode);
  registerMcpCommands(program);
  registerHostCommands(program, setExitCode);
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return 0; // --help, --version
      return usageReported ? USAGE_EXIT : reportUsageError(error.message);
    }
    return reportError(error, argv.includes("--json"));
  }
  return exitCode;
}

function reportUsageError(message: string): number {
  process.stderr.write(`${message.startsWith("error: ") ? message : `error: ${message}`}\n${HELP_HINT}\n`);
  return USAGE_EXIT;
}

/** Runs the CLI on this process's arguments and sets its exit code. */
export function runCli(): Promise<void> {
  return main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.exitCode = reportError(error, false);
    },
  );
}
