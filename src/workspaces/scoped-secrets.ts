import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import type { AgentClient } from "../guest-protocol/agent-client.js";
import type { EgressInterception } from "../network/egress-launch.js";
import { validateAllowEntry } from "../network/egress-policy.js";
import { secretAuditView, type SecretAuditView } from "../network/secret-audit.js";
import { PLACEHOLDER_PREFIX, type ScopedSecretRule } from "../network/secret-substitution.js";
import { writeFileAtomic, writeJsonAtomic } from "../storage/atomic-file.js";
import type { WorkspaceRecord } from "./workspace-record.js";

/**
 * Scoped secrets: the guest gets a placeholder in NAME; the value stays on the host, in a 0600 file
 * only the egress proxy reads, and the proxy writes it into requests for the secret's hosts only.
 * Secrets without hosts are "injected" (workspace-secrets.ts): the value itself is in the guest.
 */

/** Where pyro puts the workspace CA certificate in the guest (update-ca-certificates' input directory). */
export const GUEST_CA_PATH = "/usr/local/share/ca-certificates/pyro-egress-ca.crt";
/** The system bundle Debian's OpenSSL, curl, Python and git read. */
export const GUEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

/** The files of a workspace with intercepted egress, in its private directory. */
export function egressSecretFiles(workspaceDir: string): EgressInterception {
  return {
    secretsPath: join(workspaceDir, "egress-secrets.json"),
    auditPath: join(workspaceDir, "secret-audit.json"),
    caCertPath: join(workspaceDir, "egress-ca.pem"),
    caKeyPath: join(workspaceDir, "egress-ca-key.pem"),
  };
}

/**
 * Parses secret scopes: NAME → hosts, each value a host or a comma-separated list of hosts
 * ("api.example.com,*.example.org", an IP literal). CIDRs are not scopes: a value goes to names.
 */
export function parseSecretHosts(input: Record<string, string | string[]>): Record<string, string[]> {
  const scopes: Record<string, string[]> = {};
  for (const [name, spec] of Object.entries(input)) {
    const entries = (Array.isArray(spec) ? spec : [spec]).flatMap((s) => s.split(",")).map((s) => s.trim());
    if (entries.length === 0 || entries.some((e) => e === ""))
      throw new PyroError("INVALID_ARGUMENT", `--secret-host ${name}: give one or more hosts, comma-separated (an empty entry is not a host)`);
    const hosts = entries.map((entry) => {
      if (entry.includes("/"))
        throw new PyroError("INVALID_ARGUMENT", `--secret-host ${name}: '${entry}' is a CIDR; scope a secret to host names or IP addresses`);
      try {
        return validateAllowEntry(entry);
      } catch (error) {
        throw new PyroError("INVALID_ARGUMENT", `--secret-host ${name}: ${(error as Error).message}`);
      }
    });
    scopes[name] = [...new Set(hosts)];
  }
  return scopes;
}

export interface ScopedSecretPlan {
  /** Values that go into the guest as today (no hosts given). */
  injected: Record<string, string>;
  /** Values the proxy substitutes, with fresh placeholders. */
  scoped: ScopedSecretRule[];
}

/** Splits collected secrets by whether a scope was given; every scope must name a defined secret. */
export function planSecrets(secrets: Record<string, string>, scopes: Record<string, string[]>, networkPolicy: string): ScopedSecretPlan {
  for (const name of Object.keys(scopes)) {
    if (!(name in secrets))
      throw new PyroError("INVALID_ARGUMENT", `--secret-host ${name}: no secret '${name}' is defined (define it with --secret ${name}=VALUE or --secret-file)`);
  }
  if (Object.keys(scopes).length && networkPolicy === "off") {
    throw new PyroError("INVALID_ARGUMENT", "scoped secrets (--secret-host) are sent by the egress proxy: create the workspace with --network-policy egress");
  }
  const injected: Record<string, string> = {};
  const scoped: ScopedSecretRule[] = [];
  for (const [name, value] of Object.entries(secrets)) {
    const hosts = scopes[name];
    if (!hosts) injected[name] = value;
    // 160 random bits per workspace and secret: a placeholder never collides or is guessed.
    else scoped.push({ name, placeholder: `${PLACEHOLDER_PREFIX}${randomBytes(20).toString("hex")}`, value, hosts });
  }
  return { injected, scoped };
}

/** Whether the workspace's proxy terminates guest TLS (scoped secrets, or the user asked). */
export function interceptsTls(record: WorkspaceRecord): boolean {
  return record.network_policy !== "off" && (record.scoped_secrets.length > 0 || record.tls_interception);
}

/**
 * Values of memory-only secrets between create and the start of the workspace's proxy, which gets
 * them through its stdin: they are never written anywhere, and gone when that proxy (its VM) ends.
 */
const memoryOnlyValues = new Map<string, Record<string, string>>();

/** The memory-only values waiting for this workspace's proxy (once: the first boot takes them). */
export function takeMemoryOnlyValues(workspaceId: string): Record<string, string> | undefined {
  const values = memoryOnlyValues.get(workspaceId);
  memoryOnlyValues.delete(workspaceId);
  return values;
}

/** Drops values a failed create never handed over. */
export function forgetMemoryOnlyValues(workspaceId: string): void {
  memoryOnlyValues.delete(workspaceId);
}

/**
 * Writes what the proxy of an intercepting workspace needs: the scoped values (0600, read by the
 * proxy only; for `memoryOnly`, names and scopes without values, which wait in memory for the
 * proxy instead) and a fresh workspace CA (key 0600; it never enters the guest).
 */
export async function saveEgressSecrets(workspaceDir: string, workspaceId: string, scoped: ScopedSecretRule[], memoryOnly = false): Promise<void> {
  const files = egressSecretFiles(workspaceDir);
  if (memoryOnly && scoped.length) memoryOnlyValues.set(workspaceId, Object.fromEntries(scoped.map((r) => [r.name, r.value!])));
  await writeJsonAtomic(files.secretsPath, memoryOnly ? scoped.map(({ value: _value, ...rest }) => rest) : scoped, 0o600);
  const { mintCertificateAuthority } = await import("../network/egress-ca.js");
  const ca = await mintCertificateAuthority(workspaceId);
  await writeFileAtomic(files.caKeyPath, ca.keyPem, 0o600);
  await writeFileAtomic(files.caCertPath, ca.certPem, 0o600);
}

/** Values of scoped secrets, for redaction (belt and braces: the guest never had them). */
export async function loadScopedValues(workspaceDir: string): Promise<Record<string, string>> {
  try {
    const rules = JSON.parse(await readFile(egressSecretFiles(workspaceDir).secretsPath, "utf8")) as ScopedSecretRule[];
    return Object.fromEntries(rules.flatMap((r) => (r.value === undefined ? [] : [[r.name, r.value]])));
  } catch {
    return {};
  }
}

/** Environment every guest command gets: each scoped secret's placeholder, and the CA for TLS clients. */
export function scopedSecretEnvironment(record: WorkspaceRecord): Record<string, string> {
  const env: Record<string, string> = Object.fromEntries(record.scoped_secrets.map((s) => [s.name, s.placeholder]));
  if (interceptsTls(record)) {
    for (const name of ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"]) env[name] = GUEST_CA_BUNDLE;
    env.NODE_EXTRA_CA_CERTS = GUEST_CA_PATH;
  }
  return env;
}

/** Adds the workspace CA to the guest's trust (its own file and the system bundle), once per disk. */
export async function installGuestCa(agent: AgentClient, workspaceDir: string): Promise<void> {
  const cert = await readFile(egressSecretFiles(workspaceDir).caCertPath, "utf8");
  await agent.writeFile(GUEST_CA_PATH, cert, { mode: 0o644 });
  const bundle = await agent.readFile(GUEST_CA_BUNDLE, { maxBytes: 8 * 1024 * 1024 }).catch(() => undefined);
  if (bundle?.data.toString("utf8").includes(cert.trim())) return;
  await agent.writeFile(GUEST_CA_BUNDLE, `${bundle && !bundle.data.toString("utf8").endsWith("\n") && bundle.size ? "\n" : ""}${cert}`, {
    append: bundle !== undefined,
    mode: 0o644,
  });
}

/** Per scoped secret: the hosts its value was sent to and the refused requests. Never a value. */
export function scopedSecretAudit(record: WorkspaceRecord, workspaceDir: string): (SecretAuditView & { scope: string[] })[] {
  const views = secretAuditView(
    egressSecretFiles(workspaceDir).auditPath,
    record.scoped_secrets.map((s) => s.name),
  );
  return views.map((view, i) => ({ ...view, scope: record.scoped_secrets[i]!.hosts }));
}
