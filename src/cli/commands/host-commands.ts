import { Command, InvalidArgumentError, Option } from "commander";
import { MODE_NAMES, type ModeName } from "../../mcp/profile-names.js";
import { printJson } from "../output.js";

const HOSTS = ["claude-code", "codex", "opencode"];

export function registerHostCommands(program: Command, setExitCode: (code: number) => void): void {
  const host = program.command("host").description("Connect chat hosts (Claude Code, Codex, OpenCode) to 'pyro mcp serve'.");
  const modeOption = () => new Option("--mode <mode>", "serve a workflow mode").choices(MODE_NAMES);
  const npxOption = () => new Option("--npx", "launch through 'npx -y pyro-mcp' instead of this checkout's build");
  const withProjectOptions = (command: Command) =>
    command
      .option("--project-path <path>", "the project workspaces are seeded from (for hosts that do not start servers in it)")
      .option("--repo-url <url>", "seed workspaces from a clean clone of this Git repository instead")
      .option("--repo-ref <ref>", "branch, tag or commit of --repo-url");
  /** The project the flags name, checked now (made absolute: the host starts pyro elsewhere). */
  const projectOf = async (o: { projectPath?: string; repoUrl?: string; repoRef?: string }) => {
    if (o.projectPath === undefined && o.repoUrl === undefined && o.repoRef === undefined) return undefined;
    const { detectProjectSource } = await import("../../workspaces/project-seed.js");
    return detectProjectSource({ cwd: process.cwd(), ...o }).catch((error: unknown) => {
      throw error instanceof Error && (error as { code?: string }).code === "INVALID_ARGUMENT" ? new InvalidArgumentError(error.message) : error;
    });
  };

  withProjectOptions(host.command("connect"))
    .description("Add pyro to the host's MCP config (idempotent; other servers are kept).")
    .addArgument(new Command().createArgument("<host>", "claude-code, codex or opencode").choices(HOSTS))
    .addOption(modeOption())
    .addOption(npxOption())
    .option("--json", "print JSON")
    .action(async (name: string, o: { mode?: ModeName; npx?: boolean; json?: boolean; projectPath?: string; repoUrl?: string; repoRef?: string }) => {
      const { connectHost } = await import("../../hosts/host-connect.js");
      const project = await projectOf(o);
      const r = await connectHost(name, { ...(o.mode ? { mode: o.mode } : {}), ...(o.npx ? { style: "npx" as const } : {}), ...(project ? { project } : {}) });
      if (o.json) return printJson(r);
      process.stdout.write(`[host-connect] host=${r.host} status=${r.status} path=${r.path}\n  command: ${[r.command.command, ...r.command.args].join(" ")}\n`);
    });

  withProjectOptions(host.command("print-config"))
    .description("Print the config entry pyro would write, without writing it.")
    .addArgument(new Command().createArgument("<host>", "claude-code, codex or opencode").choices(HOSTS))
    .addOption(modeOption())
    .addOption(npxOption())
    .action(async (name: string, o: { mode?: ModeName; npx?: boolean; projectPath?: string; repoUrl?: string; repoRef?: string }) => {
      const { printConfig } = await import("../../hosts/host-connect.js");
      const project = await projectOf(o);
      const r = printConfig(name, { ...(o.mode ? { mode: o.mode } : {}), ...(o.npx ? { style: "npx" as const } : {}), ...(project ? { project } : {}) });
      process.stdout.write(`${r.config}\n`);
    });

  host
    .command("doctor")
    .description("Check every host's config for a working pyro entry (with --mode: one that serves that workflow mode).")
    .addOption(new Option("--mode <mode>", "also require each configured entry to serve this workflow mode").choices(MODE_NAMES))
    .option("--json", "print JSON")
    .action(async (o: { mode?: ModeName; json?: boolean }) => {
      const { doctorHosts } = await import("../../hosts/host-connect.js");
      const entries = await doctorHosts(process.env, o.mode);
      setExitCode(entries.some((e) => e.problems.length) ? 1 : 0);
      if (o.json) return printJson({ hosts: entries });
      for (const e of entries) {
        const serves = e.configured ? `, ${e.mode ? `mode ${e.mode}` : "default profile"}` : "";
        process.stdout.write(`${e.host}: ${e.configured ? (e.problems.length ? "BROKEN" : "ok") : "not configured"} (${e.path}${serves})\n`);
        for (const p of e.problems) process.stdout.write(`  - ${p}\n`);
        if (!e.configured) process.stdout.write(`  connect with: pyro host connect ${e.host}\n`);
      }
    });

  host
    .command("repair")
    .description("Rewrite pyro's entry in the host's config to the working command (keeps its mode and project flags).")
    .addArgument(new Command().createArgument("<host>", "claude-code, codex or opencode").choices(HOSTS))
    .option("--json", "print JSON")
    .action(async (name: string, o: { json?: boolean }) => {
      const { repairHost } = await import("../../hosts/host-connect.js");
      const r = await repairHost(name);
      if (o.json) return printJson(r);
      process.stdout.write(`[host-repair] host=${r.host} status=${r.status} path=${r.path}\n`);
    });
}
