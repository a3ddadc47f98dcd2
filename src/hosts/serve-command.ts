import { existsSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../paths.js";
import type { ModeName } from "../mcp/profiles.js";

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

/** The canonical `pyro mcp serve` command line every host config is generated from. */
export function serveCommand(options: { mode?: ModeName; style?: LaunchStyle } = {}): ServeCommand {
  const serveArgs = ["mcp", "serve", ...(options.mode ? ["--mode", options.mode] : [])];
  if ((options.style ?? defaultLaunchStyle()) === "npx") return { command: "npx", args: ["-y", "pyro-mcp", ...serveArgs] };
  return { command: process.execPath, args: [join(packageRoot(), "dist", "src", "cli", "main.js"), ...serveArgs] };
}
