import type { Command } from "commander";
import { DEFAULT_ENVIRONMENT } from "../../environments/catalog.js";
import type { LoopStep } from "../../sdk/daily-loop.js";
import type { Pyro } from "../../sdk/pyro.js";
import type { DailyLoopReadiness } from "../../workspaces/daily-loop-readiness.js";
import { printJson } from "../output.js";

function stepLine(step: LoopStep): string {
  return `[${step.step}] ${step.ok ? "ok" : "FAILED"} ${step.ms} ms: ${step.detail}\n`;
}

/** One line per piece: `  template: warm (saved state …)`. */
export function formatReadiness(readiness: DailyLoopReadiness): string {
  const lines = [`Daily loop (${readiness.environment}): ${readiness.warm ? "warm" : "not warm"}`];
  for (const [piece, state] of Object.entries(readiness.pieces)) lines.push(`  ${piece}: ${state.state} (${state.detail})`);
  return lines.join("\n") + "\n";
}

export function registerDailyLoopCommands(program: Command, pyro: () => Promise<Pyro>, setExitCode: (code: number) => void): void {
  program
    .command("demo")
    .description("Prove the workspace lifecycle end to end: create a workspace, run one command, delete it.")
    .option("--network", "give the workspace egress and fetch https://example.com instead of running git --version")
    .option("--json", "print the structured result as JSON")
    .action(async (flags: { network?: boolean; json?: boolean }) => {
      const human = !flags.json;
      const result = await (await pyro()).demo(DEFAULT_ENVIRONMENT, {
        network: Boolean(flags.network),
        ...(human ? { onStep: (step: LoopStep) => process.stdout.write(stepLine(step)) } : {}),
      });
      if (flags.json) printJson(result);
      else {
        if (result.stdout) process.stdout.write(result.stdout.endsWith("\n") ? result.stdout : `${result.stdout}\n`);
        process.stdout.write(result.ok ? `demo ok in ${result.total_ms} ms\n` : `demo FAILED: ${result.error ?? `command exited ${result.exit_code}`}\n`);
      }
      setExitCode(result.ok ? 0 : 1);
    });

  program
    .command("prepare")
    .description("Make the daily loop warm (environment, kernel, initramfs, boot template) and prove it with one throwaway workspace.")
    .argument("[environment]", "environment to prepare", DEFAULT_ENVIRONMENT)
    .option("--network", "also check the guest network path and prove it with an egress workspace")
    .option("--force", "rebuild the boot template even when it is warm")
    .option("--json", "print the structured result as JSON")
    .action(async (environment: string, flags: { network?: boolean; force?: boolean; json?: boolean }) => {
      const result = await (await pyro()).prepare(environment, { network: Boolean(flags.network), force: Boolean(flags.force) });
      setExitCode(result.after.warm ? 0 : 1);
      if (flags.json) return printJson(result);
      process.stdout.write(`Before:\n${formatReadiness(result.before)}`);
      for (const action of result.actions) process.stdout.write(`- ${action}\n`);
      for (const step of result.proof) process.stdout.write(stepLine(step));
      process.stdout.write(`After:\n${formatReadiness(result.after)}`);
      process.stdout.write(`prepared in ${result.total_ms} ms\n`);
    });
}
