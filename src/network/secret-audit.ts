import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { z } from "zod";

/**
 * Where each scoped secret went: the hosts the egress proxy wrote its value into requests for, and
 * the requests it refused because they carried the placeholder elsewhere. Names, hosts and counts
 * only; never a value.
 */
export const SecretAuditFile = z.record(
  z.string(),
  z.object({
    sent: z.record(z.string(), z.number().int()).default({}),
    refused: z.record(z.string(), z.number().int()).default({}),
  }),
);
export type SecretAuditFile = z.infer<typeof SecretAuditFile>;

/** What logs and summaries show per secret. */
export interface SecretAuditView {
  name: string;
  /** Host → requests the value was written into. */
  sent_to: Record<string, number>;
  refused_requests: number;
  /** Host → refused requests (exfiltration attempts). */
  refused_hosts: Record<string, number>;
}

/** Reads an audit file; a missing or damaged one reads as no traffic. */
export function readSecretAudit(path: string): SecretAuditFile {
  try {
    const parsed = SecretAuditFile.safeParse(JSON.parse(readFileSync(path, "utf8")));
    if (parsed.success) return parsed.data;
  } catch {
    // missing or torn: nothing recorded
  }
  return {};
}

/** The audit of the named secrets (every one listed, traffic or not). */
export function secretAuditView(path: string, names: string[]): SecretAuditView[] {
  const audit = readSecretAudit(path);
  return names.map((name) => {
    const entry = audit[name] ?? { sent: {}, refused: {} };
    return { name, sent_to: entry.sent, refused_requests: Object.values(entry.refused).reduce((a, b) => a + b, 0), refused_hosts: entry.refused };
  });
}

/** The egress proxy's side: counts in memory, written to the file (atomically) after each event. */
export class SecretAuditRecorder {
  private readonly audit: SecretAuditFile;
  private pending = false;

  constructor(private readonly path: string) {
    // A restarted proxy (the VM was restarted) continues the workspace's counts.
    this.audit = readSecretAudit(path);
  }

  record(name: string, host: string, outcome: "sent" | "refused"): void {
    this.audit[name] ??= { sent: {}, refused: {} };
    const entry = this.audit[name];
    entry[outcome][host] = (entry[outcome][host] ?? 0) + 1;
    if (this.pending) return;
    this.pending = true;
    // Coalesces a burst of requests into one write.
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.pending = false;
    const temp = `${this.path}.tmp-${process.pid}`;
    try {
      writeFileSync(temp, JSON.stringify(this.audit), { mode: 0o600 });
      renameSync(temp, this.path);
    } catch (error) {
      process.stderr.write(`egress-server: cannot write the secret audit ${this.path}: ${(error as Error).message}\n`);
    }
  }
}
