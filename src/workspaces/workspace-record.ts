import { NETWORK_POLICIES } from "./workspace-limits.js";
import { z } from "zod";
import type { VmHandle } from "../runtime/vmm-backend.js";

/** Bumped when the on-disk layout changes incompatibly. */
export const WORKSPACE_LAYOUT = 1;

export const SnapshotRecord = z.object({
  name: z.string(),
  created_at: z.string(),
  /** Files inside snapshots/<name>/. */
  state_file: z.string(),
  disk_file: z.string(),
  /**
   * Set for a baseline that is the boot template the workspace was created from (its directory
   * name): nothing was saved at create; reset restores the template and layers a fresh overlay on the seed
   * image. The file fields are empty then.
   */
  template: z.string().optional(),
  /** The /workspace disk's copy, for workspaces that have one (disk_gib set). */
  workspace_disk_file: z.string().optional(),
  /**
   * The guest's RAM as a file (a restore maps it copy-on-write); `state_file` then holds device
   * state only. Absent: the state file holds all memory (streamed).
   */
  memory_file: z.string().optional(),
});
export type SnapshotRecord = z.infer<typeof SnapshotRecord>;

/** Where a workspace's seed came from: results report it as `workspace_seed.origin_kind`. */
export const SEED_ORIGIN_KINDS = ["empty", "seed_path", "project_path", "repo_url"] as const;
export type SeedOriginKind = (typeof SEED_ORIGIN_KINDS)[number];

export const WorkspaceRecord = z.object({
  layout: z.literal(WORKSPACE_LAYOUT),
  id: z.string(),
  name: z.string().nullable(),
  labels: z.record(z.string(), z.string()),
  environment: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  /** Last mutating activity (exec, write, sync, patch, reset); reads do not count. */
  last_activity_at: z.string(),
  vcpu_count: z.number().int(),
  mem_mib: z.number().int(),
  network_policy: z.enum(NETWORK_POLICIES),
  /** Egress allowlist (host names, CIDRs); empty = any public destination. */
  allow_hosts: z.array(z.string()).default([]),
  ttl_seconds: z.number().nullable(),
  vm: z
    .object({
      pid: z.number().int(),
      /** The VMM's start time (VmHandle.startTime); null in records written before it was kept. */
      pid_start: z.string().nullable().default(null),
      run_dir: z.string(),
      accel: z.enum(["kvm", "tcg"]),
      started_at: z.string(),
      boot_ms: z.number(),
      start_mode: z.enum(["cold_boot", "template_restore", "snapshot_restore", "fork_restore"]),
    })
    .nullable(),
  /**
   * Size of the /workspace disk (its own ext4 disk, built from the seed on the host). Null for
   * workspaces created before it existed, whose /workspace is a directory of the root disk.
   */
  disk_gib: z.number().int().nullable().default(null),
  seed: z.object({
    mode: z.enum(["empty", "directory", "tar_archive"]),
    /** The seed_path, checkout root or repository URL (`workspace_seed.origin_ref`). */
    origin: z.string().nullable(),
    /** Absent in records from before project seeds: derived from `mode` then. */
    origin_kind: z.enum(SEED_ORIGIN_KINDS).optional(),
    commit: z.string().nullable().default(null),
    files: z.number().int(),
    bytes: z.number().int(),
    /** Files the seed could not take (unreadable, special, vanished…): the first SKIPPED_SHOWN of them. */
    skipped: z.array(z.object({ path: z.string(), reason: z.string() })).default([]),
    skipped_count: z.number().int().default(0),
    /** Host time (ns, as a decimal string) the seed image was finished: later guest ctimes are changes. */
    built_at_ns: z.string().nullable().default(null),
  }),
  command_count: z.number().int(),
  snapshots: z.array(SnapshotRecord),
  /** Names only: values live in secrets.json (0600) and the guest's tmpfs. */
  secret_names: z.array(z.string()).default([]),
  /** Scoped secrets (a subset of secret_names): the guest holds the placeholder; values live in egress-secrets.json (0600). */
  scoped_secrets: z
    .array(z.object({ name: z.string(), hosts: z.array(z.string()), placeholder: z.string(), memory_only: z.boolean().default(false) }))
    .default([]),
  /** The egress proxy terminates guest TLS with the workspace CA even without scoped secrets. */
  tls_interception: z.boolean().default(false),
  /** Scoped values also go into cleartext http:// requests to their hosts (opt-in; by default TLS only). */
  secrets_over_http: z.boolean().default(false),
  /** Services started through pyro: what to tell a user after the VM restarted without them. */
  services: z
    .record(
      z.string(),
      z.object({
        command: z.union([z.array(z.string()), z.string()]),
        cwd: z.string(),
        started_at: z.string(),
        stopped_at: z.string().optional(),
        published: z.array(z.object({ host_port: z.number().int(), guest_port: z.number().int() })),
      }),
    )
    .default({}),
  /** Why the VM last stopped when pyro did not stop it (crash, kill -9). */
  unexpected_stop: z.string().nullable(),
  /** What the last recovery from an interrupted pyro operation did, for `status` to tell. */
  recovery: z.string().nullable().default(null),
  /** An interrupted operation may have left staging files in the guest: remove them when it next runs. */
  guest_cleanup_pending: z.boolean().default(false),
});
export type WorkspaceRecord = z.infer<typeof WorkspaceRecord>;

/** How many skipped seed files a record keeps and results show (the count covers all). */
export const SKIPPED_SHOWN = 100;

export const CommandLogEntry = z.object({
  sequence: z.number().int(),
  command: z.union([z.array(z.string()), z.string()]),
  cwd: z.string(),
  started_at: z.string(),
  exit_code: z.number().int(),
  duration_ms: z.number(),
  timed_out: z.boolean(),
  stdout: z.string(),
  stderr: z.string(),
  stdout_truncated: z.boolean(),
  stderr_truncated: z.boolean(),
});
export type CommandLogEntry = z.infer<typeof CommandLogEntry>;

export function nowIso(): string {
  return new Date().toISOString();
}

/** How to reach the record's VM, if it has one. */
export function vmHandle(record: WorkspaceRecord): VmHandle | undefined {
  if (!record.vm) return undefined;
  return { pid: record.vm.pid, runDir: record.vm.run_dir, accel: record.vm.accel, ...(record.vm.pid_start ? { startTime: record.vm.pid_start } : {}) };
}
