import type { Command } from "commander";
import type { Pyro } from "../../sdk/pyro.js";
import { printJson } from "../output.js";
import { progressBar } from "../progress-bar.js";

function formatBytes(n: number | undefined): string {
  if (n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function registerEnvCommands(program: Command, pyro: () => Promise<Pyro>): void {
  const env = program.command("env").description("List, build, inspect and prune curated environments.");

  env
    .command("list")
    .description("List the catalog and what is installed.")
    .option("--json", "print JSON")
    .action(async (flags: { json?: boolean }) => {
      const list = await (await pyro()).listEnvironments();
      if (flags.json) return printJson({ environments: list });
      for (const e of list) {
        const state = e.installed ? "installed" : e.problem ? `broken: ${e.problem}` : "not installed";
        process.stdout.write(`${e.name} [${state}] ${e.description}\n`);
      }
    });

  env
    .command("pull")
    .description("Install an environment: from its registry artifact, else built locally from Debian's mirror; or from any pyro artifact reference.")
    .argument("<name-or-ref>", "catalog name (debian:12) or registry reference (host/repo:tag)")
    .option("--force", "reinstall even if a valid install exists")
    .option("--build", "skip the registry and build locally with mmdebstrap")
    .option("--as <name>", "install a registry artifact under this name")
    .option("--json", "print JSON")
    .action(async (name: string, flags: { force?: boolean; build?: boolean; as?: string; json?: boolean }) => {
      const progress = flags.json ? undefined : (m: string) => process.stderr.write(`${m}\n`);
      const status = await (await pyro()).pullEnvironment(name, {
        force: Boolean(flags.force),
        build: Boolean(flags.build),
        ...(flags.as ? { as: flags.as } : {}),
        ...(progress ? { onProgress: progress, onTransfer: progressBar } : {}),
      });
      if (flags.json) printJson(status);
      else process.stdout.write(`${status.name} installed at ${status.image_path} (${formatBytes(status.disk_usage_bytes)} on disk)\n`);
    });

  env
    .command("import")
    .description("Turn a container image (registry ref, 'docker save' archive or OCI layout) into a bootable environment.")
    .argument("<image>", "e.g. node:22, 127.0.0.1:5000/team/app:1, ./image.tar")
    .argument("<name>", "name for the new environment")
    .option("--json", "print JSON")
    .action(async (image: string, name: string, flags: { json?: boolean }) => {
      const status = await (await pyro()).importEnvironment(
        image,
        name,
        flags.json ? {} : { onProgress: (m) => process.stderr.write(`${m}\n`), onTransfer: progressBar },
      );
      if (flags.json) return printJson(status);
      process.stdout.write(
        `${status.name} imported at ${status.image_path} (${formatBytes(status.disk_usage_bytes)} on disk); try: pyro run ${status.name} -- ls /\n`,
      );
    });

  env
    .command("push")
    .description("Publish an installed environment (rootfs, kernel, manifest) to a registry as an OCI artifact.")
    .argument("<name>", "installed environment")
    .argument("<ref>", "registry reference, e.g. 127.0.0.1:5000/pyro/debian:12")
    .option("--json", "print JSON")
    .action(async (name: string, ref: string, flags: { json?: boolean }) => {
      const r = await (await pyro()).pushEnvironment(name, ref, flags.json ? {} : { onTransfer: progressBar });
      if (flags.json) return printJson(r);
      process.stdout.write(`[env-push] environment=${r.environment} reference=${r.reference} digest=${r.digest}\n`);
    });

  env
    .command("inspect")
    .description("Show an environment's recipe and install state.")
    .argument("<name>", "environment name")
    .option("--json", "print JSON")
    .action(async (name: string, flags: { json?: boolean }) => {
      const s = await (await pyro()).inspectEnvironment(name);
      if (flags.json) return printJson(s);
      const lines = [
        `Name: ${s.name}`,
        `Version: ${s.version}`,
        `Description: ${s.description}`,
        `Packages: ${s.packages.length ? s.packages.join(", ") : "(minbase only)"}`,
        `Installed: ${s.installed ? "yes" : "no"}${s.problem ? ` (${s.problem})` : ""}`,
        `Directory: ${s.dir}`,
      ];
      if (s.installed)
        lines.push(
          `Image: ${s.image_path}`,
          `Image size: ${formatBytes(s.image_size_bytes)} (apparent), ${formatBytes(s.disk_usage_bytes)} on disk`,
          `Built: ${s.built_at}`,
        );
      process.stdout.write(lines.join("\n") + "\n");
    });

  env
    .command("prune")
    .description("Remove broken, stale or unknown environment installs (all of them with --all).")
    .option("--all", "remove every installed environment")
    .option("--json", "print JSON")
    .action(async (flags: { all?: boolean; json?: boolean }) => {
      const result = await (await pyro()).pruneEnvironments({ all: Boolean(flags.all) });
      if (flags.json) return printJson(result);
      process.stdout.write(result.removed.length ? `removed: ${result.removed.join(", ")}\n` : "nothing to prune\n");
    });
}
