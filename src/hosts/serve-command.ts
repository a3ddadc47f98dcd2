import { existsSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../paths.js";
import type { ModeName } from "../mcp/profiles.js";
import type { ProjectSource } from "../workspaces/project-seed.js";

export interface ServeCommand {
  command: string;
  args: string[];
}

/** How the host should launch pyro: this checkout's build, or the published package through npx. */
export type LaunchStyle = "local" | "npx";

export function defaultLaunchStyle(): LaunchStyle {
  // A git checkout (this repo) runs its own build; an installed package is reachable through npx.
  return existsSync(join(packageRoot(), ".git")) ? "local" : "npx";
}

/** `pyro mcp serve`'s flags for a project source (a host config carries them to every start). */
export function projectArgs(project: ProjectSource | undefined): string[] {
  if (!project) return [];
  if (project.kind === "project_path") return ["--project-path", project.path];
  return ["--repo-url", project.url, ...(project.ref !== undefined ? ["--repo-ref", project.ref] : [])];
}

/** The project source a config's `pyro mcp serve` arguments name, if any (what repair keeps). */
export function projectOfArgs(args: readonly string[]): ProjectSource | undefined {
  const value = (flag: string) => {
    const at = args.indexOf(flag);
    return at >= 0 ? args[at + 1] : undefined;
  };
  const [path, url, ref] = [value("--project-path"), value("--repo-url"), value("--repo-ref")];
  if (url !== undefined) return { kind: "repo_url", url, ...(ref !== undefined ? { ref } : {}) };
  return path !== undefined ? { kind: "project_path", path } : undefined;
}

/** The canonical `pyro mcp serve` command line every host config is generated from. */
export function serveCommand(options: { mode?: ModeName; style?: LaunchStyle; project?: ProjectSource } = {}): ServeCommand {
  const serveArgs = ["mcp", "serve", ...(options.mode ? ["--mode", options.mode] : []), ...projectArgs(options.project)];
  if ((options.style ?? defaultLaunchStyle()) === "npx") return { command: "npx", args: ["-y", "pyro-mcp", ...serveArgs] };
  return { command: process.execPath, args: [join(packageRoot(), "dist", "src", "cli", "main.js"), ...serveArgs] };
}
