import type { Command } from "commander";
import type { DoctorReport } from "../../doctor/doctor.js";
import type { Pyro } from "../../sdk/pyro.js";
import { printJson, yesNo } from "../output.js";
import { formatReadiness } from "./daily-loop-commands.js";

export function formatDoctor(report: DoctorReport): string {
  const lines = [
    `Platform: ${report.platform}`,
    `Runtime: ${report.runtime}`,
    `QEMU: ${report.qemu.version ?? "missing"}${report.qemu.binary ? ` (${report.qemu.binary})` : ""}`,
    `KVM: exists=${yesNo(report.kvm.exists)} readable=${yesNo(report.kvm.readable)} writable=${yesNo(report.kvm.writable)} usable=${report.kvm.usable === null ? "unknown" : yesNo(report.kvm.usable)} (${report.kvm.reason})`,
    `Accelerator: ${report.accel ?? "unknown"}${report.accel === "tcg" ? " (software emulation: slower guests)" : ""}`,
    `Boot templates: ${report.boot_templates.memory} (${report.boot_templates.detail})`,
    `Guest kernel: ${report.guest_kernel.prepared ? `${report.guest_kernel.package} (${report.guest_kernel.release})` : "not prepared"}`,
    `Guest agent: ${report.guest_agent.built ? report.guest_agent.path : "not built"}`,
    `Environment cache: ${report.environment_cache}`,
    `Environments: ${report.environments.map((e) => `${e.name}=${e.installed ? "installed" : e.problem ? "broken" : "not installed"}`).join(" ")}`,
    `Capabilities: vm_boot=${yesNo(report.capabilities.vm_boot)} guest_exec=${yesNo(report.capabilities.guest_exec)} guest_network=${yesNo(report.capabilities.guest_network)}`,
  ];
  if (report.problems.length) {
    lines.push("Problems:");
    for (const p of report.problems) lines.push(`  - ${p.what}\n    fix: ${p.fix}`);
  } else {
    lines.push("Problems: none");
  }
  return lines.join("\n") + "\n";
}

export function registerDoctorCommand(program: Command, pyro: () => Promise<Pyro>, setExitCode: (code: number) => void): void {
  program
    .command("doctor")
    .description("Inspect the host: QEMU, KVM usability (by a probe boot), guest kernel, agent and environments.")
    .option("--environment <name>", "also report the daily loop's readiness (warm / cold / stale) for this environment")
    .option("--network", "with --environment: include the guest network path")
    .option("--json", "print the report as JSON")
    .action(async (flags: { environment?: string; network?: boolean; json?: boolean }) => {
      const sdk = await pyro();
      const report = await sdk.doctor();
      const readiness = flags.environment !== undefined ? await sdk.dailyLoopReadiness(flags.environment, { network: Boolean(flags.network) }) : undefined;
      if (flags.json) printJson(readiness ? { ...report, daily_loop: readiness } : report);
      else process.stdout.write(formatDoctor(report) + (readiness ? formatReadiness(readiness) : ""));
      setExitCode(report.runtime === "PASS" ? 0 : 1);
    });
}
