import { chmod, readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import type { WorkspaceContext } from "./workspace-context.js";
import { loadScopedValues } from "./scoped-secrets.js";

/** Where secrets live in the guest: tmpfs (/run), never the disk. */
export const GUEST_SECRET_DIR = "/run/pyro-secrets";
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const MAX_SECRET_BYTES = 64 * 1024;

const SecretFile = z.record(z.string(), z.string());

function secretsPath(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "secrets.json");
}

/** Collects --secret NAME=VALUE and --secret-file NAME=PATH definitions, validated. */
export async function collectSecrets(literal: Record<string, string> = {}, files: Record<string, string> = {}): Promise<Record<string, string>> {
  const secrets: Record<string, string> = {};
  const add = (name: string, value: string) => {
    if (!NAME.test(name)) throw new PyroError("INVALID_ARGUMENT", `invalid secret name '${name}': use letters, digits and '_'`);
    if (name in secrets) throw new PyroError("INVALID_ARGUMENT", `secret '${name}' is defined twice`);
    if (!value) throw new PyroError("INVALID_ARGUMENT", `secret '${name}' is empty`);
    if (Buffer.byteLength(value) > MAX_SECRET_BYTES) throw new PyroError("INVALID_ARGUMENT", `secret '${name}' is larger than ${MAX_SECRET_BYTES} bytes`);
    secrets[name] = value;
  };
  for (const [name, value] of Object.entries(literal)) add(name, value);
  for (const [name, path] of Object.entries(files)) {
    const text = await readFile(path, "utf8").catch(() => {
      throw new PyroError("INVALID_ARGUMENT", `cannot read the file for secret '${name}': ${path}`);
    });
    add(name, text.replace(/\r?\n$/, ""));
  }
  return secrets;
}

export async function saveSecrets(ctx: WorkspaceContext, id: string, secrets: Record<string, string>): Promise<void> {
  if (Object.keys(secrets).length === 0) return;
  await writeJsonAtomic(secretsPath(ctx, id), secrets, 0o600);
  await chmod(secretsPath(ctx, id), 0o600);
}

export async function loadSecrets(ctx: WorkspaceContext, id: string): Promise<Record<string, string>> {
  return (await readJsonIfValid(secretsPath(ctx, id), SecretFile)) ?? {};
}

/** Every value pyro redacts from what a workspace returns: injected secrets and scoped ones. */
export async function loadRedactedValues(ctx: WorkspaceContext, id: string): Promise<Record<string, string>> {
  return { ...(await loadScopedValues(ctx.store.dir(id))), ...(await loadSecrets(ctx, id)) };
}

/** Writes each secret to /run/pyro-secrets/NAME (0400) in the guest. */
export async function materializeSecrets(agent: AgentClient, secrets: Record<string, string>): Promise<void> {
  for (const [name, value] of Object.entries(secrets)) await agent.writeFile(`${GUEST_SECRET_DIR}/${name}`, value, { mode: 0o400 });
}

/** `SECRET` or `SECRET=ENV_VAR` mappings → environment variables for one command. */
export function secretEnvironment(secrets: Record<string, string>, mappings: string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const mapping of mappings) {
    const [name, envName = name] = mapping.split("=", 2) as [string, string?];
    const value = secrets[name];
    if (value === undefined) {
      throw new PyroError(
        "INVALID_ARGUMENT",
        `the workspace has no secret '${name}'${Object.keys(secrets).length ? ` (it has: ${Object.keys(secrets).join(", ")})` : " (define secrets at create with --secret)"}`,
      );
    }
    if (!NAME.test(envName)) throw new PyroError("INVALID_ARGUMENT", `invalid environment variable name '${envName}'`);
    env[envName] = value;
  }
  return env;
}
