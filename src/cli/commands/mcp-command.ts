import { type Command, InvalidArgumentError, Option } from "commander";
import { portNumber } from "../parse-options.js";
import { DEFAULT_ENVIRONMENT } from "../../environments/catalog.js";
import { DEFAULT_PROFILE, MODE_NAMES, PROFILE_NAMES, type ModeName, type ProfileName } from "../../mcp/profile-names.js";

function hostPort(value: string): { host: string; port: number } {
  const match = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(value);
  if (!match) throw new InvalidArgumentError(`expected HOST:PORT, e.g. 127.0.0.1:8765, got '${value}'`);
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port: portNumber(match[2]!, { allowZero: true }) };
}

export function registerMcpCommands(program: Command): void {
  const mcp = program.command("mcp").description("Serve pyro's tools to chat hosts over MCP.");
  mcp
    .command("serve")
    .description("Serve MCP on stdio (default) or Streamable HTTP. Logs go to stderr; stdout carries MCP only.")
    .addOption(new Option("--profile <profile>", "tool profile").choices(PROFILE_NAMES).default(DEFAULT_PROFILE))
    .addOption(new Option("--mode <mode>", "workflow mode: a narrowed tool set for one recipe").choices(MODE_NAMES))
    .option("--http <host:port>", "serve Streamable HTTP on a loopback address instead of stdio (port 0 picks a free one)", hostPort)
    .option("--project-path <path>", "seed workspace_create without seed_path from this project (default: the Git checkout pyro is started in)")
    .option(
      "--repo-url <url>",
      "seed workspace_create without seed_path from a clean clone of this Git repository (https://, ssh://, git://, file:// or a path)",
    )
    .option("--repo-ref <ref>", "branch, tag or commit of --repo-url to clone (default: its default branch)")
    .option(
      "--no-warm-vm",
      `keep no paused VM of ${DEFAULT_ENVIRONMENT} ready for the next vm_run or unseeded workspace_create (by default one is made at start when there is no project to seed from, and again after each, while host memory allows)`,
    )
    .option("--token-file <path>", "file (mode 0600) holding the bearer token for --http (default: $PYRO_MCP_TOKEN, else a random one printed to stderr)")
    // Kept only to say what to use instead: a token in argv is readable by every local user.
    .addOption(new Option("--token <token>").hideHelp())
    .addHelpText(
      "after",
      "\nProfiles: vm-run (one-shot only), workspace-core (default), workspace-full (adds start/stop, summary, snapshots).\nModes: repro-fix, inspect, cold-start, review-eval.",
    )
    .action(
      async (o: {
        profile: ProfileName;
        mode?: ModeName;
        http?: { host: string; port: number };
        token?: string;
        tokenFile?: string;
        projectPath?: string;
        warmVm: boolean;
        repoUrl?: string;
        repoRef?: string;
      }) => {
        if (o.token !== undefined) {
          throw new InvalidArgumentError(
            "--token is not accepted: other local users can read the command line; use --token-file PATH (mode 0600) or set PYRO_MCP_TOKEN",
          );
        }
        if (o.tokenFile !== undefined && !o.http) throw new InvalidArgumentError("--token-file applies to --http only; stdio needs no token");
        // Loaded here, not at start-up: the MCP SDK alone costs ~110 ms that other commands should not pay.
        const [{ Pyro }, { createPyroMcpServer }, { serveHttp, newToken }, { serveStdio }, { readTokenFile }] = await Promise.all([
          import("../../sdk/pyro.js"),
          import("../../mcp/server.js"),
          import("../../mcp/http-server.js"),
          import("../../mcp/stdio-server.js"),
          import("../../mcp/token-file.js"),
        ]);
        // What workspace_create without seed_path seeds from; bad flags fail here, before serving.
        const { detectProjectSource, describeProjectSource } = await import("../../workspaces/project-seed.js");
        const project = await detectProjectSource({ cwd: process.cwd(), projectPath: o.projectPath, repoUrl: o.repoUrl, repoRef: o.repoRef }).catch(
          (error: unknown) => {
            throw error instanceof Error && (error as { code?: string }).code === "INVALID_ARGUMENT" ? new InvalidArgumentError(error.message) : error;
          },
        );
        const pyro = new Pyro({
          onProgress: (m) => process.stderr.write(`${m}\n`),
          ...(project ? { project } : {}),
          ...(o.warmVm ? { warmVm: { environment: DEFAULT_ENVIRONMENT } } : {}),
        });
        // Made now, not after the first create: an agent's first workspace_create should not be the
        // one that waits for a VM. Only where that create is unseeded (no project to seed it from).
        if (o.warmVm && !project) void pyro.warmUp("workspace").catch(() => undefined);
        const make = () => createPyroMcpServer({ pyro, profile: o.profile, ...(o.mode ? { mode: o.mode } : {}) });
        if (!o.http) {
          process.stderr.write(`[mcp] ${describeProjectSource(project)}\n`);
          await serveStdio(make());
          // The client is gone: exit now (exit cleanup stops one-shot VMs; workspaces persist by design).
          process.exit(0);
        }
        // An empty PYRO_MCP_TOKEN is a token someone set (serveHttp refuses it), not an unset one.
        const given = o.tokenFile !== undefined ? await readTokenFile(o.tokenFile) : process.env.PYRO_MCP_TOKEN;
        const token = given ?? newToken();
        if (given === undefined) process.stderr.write(`[mcp] bearer token: ${token}\n`);
        const { port } = await serveHttp({ ...o.http, token, createServer: make });
        process.stderr.write(`[mcp] serving Streamable HTTP on http://${o.http.host.includes(":") ? `[${o.http.host}]` : o.http.host}:${port}/mcp\n`);
        process.stderr.write(`[mcp] ${describeProjectSource(project)}\n`);
        await new Promise(() => undefined); // until a signal
      },
    );
}
