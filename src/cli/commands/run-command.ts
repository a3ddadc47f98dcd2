import type { Command } from "commander";
import type { Pyro } from "../../sdk/pyro.js";
import { printJson } from "../output.js";
import { integerOption, secondsUpTo } from "../parse-options.js";
import { RUN_DEFAULTS } from "../../vm-run/run-result.js";
import { COMMAND_TIMEOUT_MAX_SECONDS, MACHINE_SHAPE_LIMITS } from "../../runtime/guest-limits.js";

interface RunFlags {
  vcpuCount?: number;
  memMib?: number;
  timeoutSeconds?: number;
  network?: boolean;
  allowHostCompat?: boolean;
  json?: boolean;
}

export function registerRunCommand(program: Command, pyro: () => Promise<Pyro>, setExitCode: (code: number) => void): void {
  program
    .command("run")
    .description("Run one command inside a disposable microVM, then destroy the VM.")
    .argument("<environment>", "environment name, e.g. debian:12 (see 'pyro env list')")
    .argument("<command...>", "command and arguments, after --")
    .option(
      "--vcpu-count <n>",
      `virtual CPUs (default ${RUN_DEFAULTS.vcpuCount})`,
      integerOption(MACHINE_SHAPE_LIMITS.vcpuCount.min, MACHINE_SHAPE_LIMITS.vcpuCount.max),
    )
    .option(
      "--mem-mib <n>",
      `guest memory in MiB (default ${RUN_DEFAULTS.memMib})`,
      integerOption(MACHINE_SHAPE_LIMITS.memMib.min, MACHINE_SHAPE_LIMITS.memMib.max),
    )
    .option("--timeout-seconds <s>", `kill the command after this long (default ${RUN_DEFAULTS.timeoutSeconds})`, secondsUpTo(COMMAND_TIMEOUT_MAX_SECONDS))
    .option("--network", "give the guest outbound network access (user-mode NAT)")
    .option("--allow-host-compat", "if no VM can boot, run the command ON THE HOST, unisolated (off by default)")
    .option("--json", "print the structured result as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  pyro run debian:12 -- git --version\n  pyro run debian:12 --json -- sh -c 'uname -a'\n\npyro's exit code is the command's; pyro's own failures exit 125.",
    )
    .action(async (environment: string, rawCommand: string[], flags: RunFlags) => {
      // Commander drops the "--" separator; strip it too if a caller passes it through.
      const command = rawCommand[0] === "--" ? rawCommand.slice(1) : rawCommand;
      const human = !flags.json;
      const result = await (await pyro()).run(environment, command, {
        ...(flags.vcpuCount !== undefined ? { vcpuCount: flags.vcpuCount } : {}),
        ...(flags.memMib !== undefined ? { memMib: flags.memMib } : {}),
        ...(flags.timeoutSeconds !== undefined ? { timeoutSeconds: flags.timeoutSeconds } : {}),
        network: Boolean(flags.network),
        allowHostCompat: Boolean(flags.allowHostCompat),
        ...(human ? { onProgress: (m: string) => process.stderr.write(`${m}\n`) } : {}),
      });
      if (flags.json) {
        printJson(result);
      } else {
        process.stdout.write(result.stdout);
        process.stderr.write(result.stderr);
        if (result.warning) process.stderr.write(`[run] WARNING: ${result.warning}\n`);
        process.stderr.write(
          `[run] environment=${result.environment} execution_mode=${result.execution_mode} backend=${result.backend} accel=${result.accel} ` +
            `exit_code=${result.exit_code} boot_ms=${result.boot_ms} duration_ms=${result.duration_ms} total_ms=${result.total_ms}\n`,
        );
      }
      setExitCode(result.exit_code);
    });
}
