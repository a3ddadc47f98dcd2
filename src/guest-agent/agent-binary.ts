import { join } from "node:path";
import { PyroError } from "../errors.js";
import { isFile } from "../storage/path-exists.js";
import { packageRoot } from "../paths.js";
import { findCargo, runHostCommand } from "../process/host-command.js";

export const AGENT_TARGET = "x86_64-unknown-linux-gnu";

export function agentSourceDir(): string {
  return join(packageRoot(), "guest", "agent");
}

/** Where `cargo build --release` leaves the static agent binary. */
export function builtAgentPath(): string {
  return join(agentSourceDir(), "target", AGENT_TARGET, "release", "pyro-agent");
}

/** The agent binary to put in guests: $PYRO_AGENT_PATH, else the one built from guest/agent. */
export async function locateAgent(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const candidate = env.PYRO_AGENT_PATH || builtAgentPath();
  return (await isFile(candidate)) ? candidate : undefined;
}

/** Returns the agent binary, building it with cargo (std only, static) when it is missing. */
export async function ensureAgent(onProgress?: (message: string) => void): Promise<string> {
  const found = await locateAgent();
  if (found) return found;
  const cargo = findCargo();
  if (!cargo || !(await isFile(cargo))) {
    throw new PyroError(
      "AGENT_UNAVAILABLE",
      "the guest agent is not built and cargo is missing; run scripts/setup.sh (it installs cargo and builds guest/agent)",
    );
  }
  onProgress?.("[agent] phase=build");
  await runHostCommand(cargo, ["build", "--release", "--quiet"], { cwd: agentSourceDir(), timeoutMs: 900_000 });
  const built = await locateAgent();
  if (!built) throw new PyroError("AGENT_UNAVAILABLE", `cargo build succeeded but ${builtAgentPath()} is missing`);
  return built;
}
