import { rm } from "node:fs/promises";
import { DEFAULT_MACHINE_SHAPE, checkMachineShape } from "../runtime/guest-limits.js";
import { PyroError } from "../errors.js";
import type { InstalledEnvironment } from "../environments/environment-store.js";
import type { GuestRuntime } from "../runtime/guest-runtime.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { makePrivateTempDir } from "../storage/private-storage.js";
import { ensureBootTemplate, type BootTemplate } from "./boot-templates.js";
import { emptySeedImage } from "./empty-seed-image.js";
import { releaseUnmappedForkMemory } from "./fork-memory.js";
import { allocatedBytes } from "./workspace-disk-usage.js";
import { buildSeedImage, checkDiskGib, checkSeedFits, DEFAULT_DISK_GIB, scanSeed, type SeedScan } from "./seed-image.js";
import { bootWorkspace, layerDisk, layerWorkspaceDisk } from "./workspace-boot.js";
import { baselineManifestPath, seedImagePath } from "./workspace-disk-files.js";
import { nowIso, reconcileVm, vmHandle, withLockedWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { WORKSPACE_LAYOUT, type WorkspaceRecord } from "./workspace-record.js";
import type { ProjectSource } from "./project-seed.js";
import { type PreparedSeed, prepareWorkspaceSeed, resolveWorkspaceSeed, seedRecord, seedView, type WorkspaceSeedView } from "./workspace-seed.js";
import { BASELINE_SNAPSHOT, saveSnapshot, templateBaseline } from "./workspace-snapshots.js";
import { checkNetworkOptions } from "./workspace-network.js";
import { collectSecrets, saveSecrets } from "./workspace-secrets.js";
import { forgetMemoryOnlyValues, interceptsTls, parseSecretHosts, planSecrets, saveEgressSecrets } from "./scoped-secrets.js";
import { newWorkspaceId, validateName } from "./workspace-store.js";
import type { WarmWorkspaceSlot } from "./warm-workspace.js";

/** A workspace's machine shape when the caller does not choose one. */
export const WORKSPACE_DEFAULTS = DEFAULT_MACHINE_SHAPE;

export interface CreateWorkspaceOptions {
  name?: string;
  labels?: Record<string, string>;
  /** Host directory or .tar/.tar.gz/.tgz to put in /workspace. */
  seedPath?: string;
  /** Seeds /workspace when seedPath is absent: a project directory or checkout, or a repository to clone. */
  project?: ProjectSource;
  /** Size of the /workspace disk in GiB (default DEFAULT_DISK_GIB); the seed must fit in it. */
  diskGib?: number;
  vcpuCount?: number;
  memMib?: number;
  /** Delete the workspace after this many seconds without mutating activity. */
  ttlSeconds?: number;
  /** Secrets by name: literal values, or host files to read them from. */
  secrets?: Record<string, string>;
  secretFiles?: Record<string, string>;
  /**
   * Scopes by secret name (hosts, or comma-separated host lists): such a secret is "scoped": the
   * guest sees a placeholder and the egress proxy sends the value to these hosts only. A secret
   * without a scope is "injected": its value is in the guest (tmpfs), redacted from output.
   */
  secretHosts?: Record<string, string | string[]>;
  /**
   * Scoped values are kept in memory only (handed to the VM's egress proxy, never written): they
   * are gone when the VM stops; after a restart their placeholders are refused.
   */
  secretMemoryOnly?: boolean;
  /**
   * Scoped values also go into cleartext http:// requests to their hosts. Off by default: a value
   * sent over plain http crosses the network readable by anyone on the path.
   */
  secretsOverHttp?: boolean;
  /** Terminate and inspect guest TLS at the egress proxy even without scoped secrets. */
  tlsInterception?: boolean;
  /** off (default: no NIC), egress, or egress+published-ports. */
  networkPolicy?: string;
  /** Egress allowlist: host names ("*.example.com") and CIDRs. */
  allowHosts?: string[];
}

/** What CLI, SDK and MCP show for a workspace. */
export interface WorkspaceView {
  workspace_id: string;
  name: string | null;
  labels: Record<string, string>;
  environment: string;
  state: "running" | "stopped";
  created_at: string;
  last_activity_at: string;
  expires_at: string | null;
  vcpu_count: number;
  mem_mib: number;
  disk_gib: number | null;
  network_policy: string;
  allow_hosts: string[];
  command_count: number;
  snapshots: string[];
  secret_names: string[];
  workspace_seed: WorkspaceSeedView;
  /** Which secrets are scoped, and to which hosts (placeholders and values are not shown). */
  scoped_secrets: { name: string; hosts: string[]; memory_only: boolean }[];
  tls_interception: boolean;
  vm: { pid: number; accel: string; boot_ms: number; start_mode: string } | null;
  unexpected_stop: string | null;
  /** What pyro repaired after an interrupted operation on this workspace, if anything. */
  recovery: string | null;
}

export function viewOf(record: WorkspaceRecord): WorkspaceView {
  return {
    workspace_id: record.id,
    name: record.name,
    labels: record.labels,
    environment: record.environment,
    state: record.vm ? "running" : "stopped",
    created_at: record.created_at,
    last_activity_at: record.last_activity_at,
    expires_at: expiresAt(record),
    vcpu_count: record.vcpu_count,
    mem_mib: record.mem_mib,
    disk_gib: record.disk_gib,
    network_policy: record.network_policy,
    allow_hosts: record.allow_hosts,
    command_count: record.command_count,
    snapshots: record.snapshots.map((s) => s.name),
    secret_names: record.secret_names,
    workspace_seed: seedView(record.seed),
    scoped_secrets: record.scoped_secrets.map(({ name, hosts, memory_only }) => ({ name, hosts, memory_only })),
    tls_interception: interceptsTls(record),
    vm: record.vm ? { pid: record.vm.pid, accel: record.vm.accel, boot_ms: record.vm.boot_ms, start_mode: record.vm.start_mode } : null,
    unexpected_stop: record.unexpected_stop,
    recovery: record.recovery,
  };
}

function expiresAt(record: WorkspaceRecord): string | null {
  return record.ttl_seconds ? new Date(Date.parse(record.last_activity_at) + record.ttl_seconds * 1000).toISOString() : null;
}

function checkShape(vcpuCount: number, memMib: number, ttlSeconds: number | undefined): void {
  checkMachineShape({ vcpuCount, memMib });
  if (ttlSeconds !== undefined && !(ttlSeconds > 0)) throw new PyroError("INVALID_ARGUMENT", `ttl must be a positive number of seconds`);
}

function checkLabels(labels: Record<string, string>): void {
  for (const key of Object.keys(labels)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/.test(key)) throw new PyroError("INVALID_ARGUMENT", `invalid label key '${key}'`);
  }
}

/**
 * The baseline that reset returns to: the boot template the VM was restored from with the seed
 * image (nothing to save), or else a snapshot of the VM. Diff's baseline is the seed image itself.
 */
export async function captureBaseline(ctx: WorkspaceContext, record: WorkspaceRecord, vm: RunningVm, template: BootTemplate | undefined): Promise<void> {
  const fromTemplate = template && record.vm?.start_mode === "template_restore";
  record.snapshots = [fromTemplate ? templateBaseline(template) : await saveSnapshot(ctx, record, vm, BASELINE_SNAPSHOT)];
}

/**
 * Creates and starts a workspace: restore of the environment's boot template (cold boot when there
 * is none or it fails), seed /workspace, capture the baseline. The VM keeps running after return.
 */
export async function createWorkspace(
  ctx: WorkspaceContext,
  environment: string,
  options: CreateWorkspaceOptions = {},
  warm?: WarmWorkspaceSlot,
): Promise<WorkspaceView & { create_ms: number }> {
  const started = Date.now();
  await ctx.environments.spec(environment);
  const shape = { vcpuCount: options.vcpuCount ?? WORKSPACE_DEFAULTS.vcpuCount, memMib: options.memMib ?? WORKSPACE_DEFAULTS.memMib };
  checkShape(shape.vcpuCount, shape.memMib, options.ttlSeconds);
  if (options.name !== undefined) await ctx.store.assertNameFree(validateName(options.name));
  checkLabels(options.labels ?? {});
  await ctx.recoverInterrupted();
  await reapExpired(ctx);
  // Validate the seed and secrets before booting anything: a hostile archive costs nothing, and a
  // seed that cannot fit the disk fails before any file is created.
  const diskGib = checkDiskGib(options.diskGib ?? DEFAULT_DISK_GIB);
  const resolved = await resolveWorkspaceSeed(ctx.paths, options);
  let unpacked: string | undefined;
  try {
    const seed = resolved
      ? await prepareWorkspaceSeed(resolved, async () => (unpacked = await makePrivateTempDir(ctx.paths.stateDir, ".seed-unpack-")))
      : undefined;
    const scan = seed ? scanSeed(seed.source) : undefined;
    if (scan) checkSeedFits(scan, diskGib);
    return await createWithSeed(ctx, environment, options, started, shape, diskGib, seed, scan, warm);
  } finally {
    if (unpacked) await rm(unpacked, { recursive: true, force: true });
  }
}

async function createWithSeed(
  ctx: WorkspaceContext,
  environment: string,
  options: CreateWorkspaceOptions,
  started: number,
  shape: { vcpuCount: number; memMib: number },
  diskGib: number,
  seed: PreparedSeed | undefined,
  scan: SeedScan | undefined,
  warm: WarmWorkspaceSlot | undefined,
): Promise<WorkspaceView & { create_ms: number }> {
  const secrets = await collectSecrets(options.secrets, options.secretFiles);
  const network = checkNetworkOptions(options.networkPolicy ?? "off", options.allowHosts ?? []);
  const secretPlan = planSecrets(secrets, parseSecretHosts(options.secretHosts ?? {}), network.policy);
  if (options.secretMemoryOnly && secretPlan.scoped.length === 0)
    throw new PyroError("INVALID_ARGUMENT", "--secret-memory-only applies to scoped secrets: give --secret-host for them");
  if (options.secretsOverHttp && secretPlan.scoped.length === 0)
    throw new PyroError("INVALID_ARGUMENT", "--secret-over-http applies to scoped secrets: give --secret-host for them");
  if (options.tlsInterception && network.policy === "off")
    throw new PyroError("INVALID_ARGUMENT", "TLS interception is done by the egress proxy: create the workspace with --network-policy egress");
  const record = newWorkspaceRecord(environment, shape, diskGib, network, seedRecord(seed, scan), {
    name: options.name ?? null,
    labels: options.labels ?? {},
    ttl_seconds: options.ttlSeconds ?? null,
    secret_names: Object.keys(secrets).sort(),
    scoped_secrets: secretPlan.scoped.map(({ name, hosts, placeholder }) => ({ name, hosts, placeholder, memory_only: options.secretMemoryOnly ?? false })),
    tls_interception: options.tlsInterception ?? false,
    secrets_over_http: options.secretsOverHttp ?? false,
  });
  // A create the warm workspace can be (unseeded, offline, no secrets, its machine) is finished with it.
  const adopted = await warm?.take(record);
  if (adopted) return { ...viewOf(adopted), create_ms: Date.now() - started };
  // Before the lock and the directory: an environment not installed fails with nothing made.
  const prepared = { env: await ctx.environments.require(environment), runtime: await ctx.runtime() };
  const id = record.id;
  // Locked before its directory exists: a directory without a record and without a live lock
  // holder is then always an interrupted create, which recovery removes (secrets included).
  return ctx.store.withLock(id, "create", async () => {
    const claim = await ctx.store.claimName(record.name, id);
    let vm: RunningVm | undefined;
    try {
      await ctx.store.createDir(id);
      await saveSecrets(ctx, id, secretPlan.injected);
      if (interceptsTls(record)) await saveEgressSecrets(ctx.store.dir(id), id, secretPlan.scoped, options.secretMemoryOnly);
      const booted = await bootNewWorkspace(ctx, record, seed, scan, prepared);
      vm = booted.vm;
      await captureBaseline(ctx, record, vm, booted.template);
      await ctx.store.write(record);
      await claim.release();
      vm.detach();
      return { ...viewOf(record), create_ms: Date.now() - started };
    } catch (error) {
      if (vm) await vm.dispose();
      forgetMemoryOnlyValues(id);
      await ctx.store.remove(id);
      await claim.release();
      throw error;
    }
  });
}

/**
 * The record of a new workspace with nothing chosen but its shape: unnamed, unseeded, offline, no
 * secrets (what a warm workspace is made as, until a create gives it the caller's choices).
 */
export function plainWorkspaceRecord(environment: string, shape: { vcpuCount: number; memMib: number }, diskGib: number): WorkspaceRecord {
  return newWorkspaceRecord(environment, shape, diskGib, { policy: "off", allow: [] }, seedRecord(undefined, undefined), {
    name: null,
    labels: {},
    ttl_seconds: null,
    secret_names: [],
    scoped_secrets: [],
    tls_interception: false,
    secrets_over_http: false,
  });
}

/** A new workspace's record, not yet written: `fields` are what the caller chose, the rest starts empty. */
export function newWorkspaceRecord(
  environment: string,
  shape: { vcpuCount: number; memMib: number },
  diskGib: number,
  network: { policy: WorkspaceRecord["network_policy"]; allow: string[] },
  seed: WorkspaceRecord["seed"],
  fields: Pick<WorkspaceRecord, "name" | "labels" | "ttl_seconds" | "secret_names" | "scoped_secrets" | "tls_interception" | "secrets_over_http">,
): WorkspaceRecord {
  const now = nowIso();
  return {
    layout: WORKSPACE_LAYOUT,
    id: newWorkspaceId(),
    environment,
    created_at: now,
    updated_at: now,
    last_activity_at: now,
    vcpu_count: shape.vcpuCount,
    mem_mib: shape.memMib,
    disk_gib: diskGib,
    network_policy: network.policy,
    allow_hosts: network.allow,
    services: {},
    vm: null,
    seed,
    command_count: 0,
    snapshots: [],
    unexpected_stop: null,
    recovery: null,
    guest_cleanup_pending: false,
    ...fields,
  };
}

/**
 * Builds a new workspace's disks in its (created, locked) directory and starts its VM: a restore
 * of the boot template of its shape where it has one, else a cold boot. The record is not written.
 */
export async function bootNewWorkspace(
  ctx: WorkspaceContext,
  record: WorkspaceRecord,
  seed: PreparedSeed | undefined,
  scan: SeedScan | undefined,
  prepared?: { env: InstalledEnvironment; runtime: GuestRuntime },
): Promise<{ vm: RunningVm; template: BootTemplate | undefined }> {
  const env = prepared?.env ?? (await ctx.environments.require(record.environment));
  const runtime = prepared?.runtime ?? (await ctx.runtime());
  const { id } = record;
  const diskGib = record.disk_gib ?? DEFAULT_DISK_GIB;
  const shape = { vcpuCount: record.vcpu_count, memMib: record.mem_mib };
  const image = seed
    ? await buildSeedImage(seed.source, scan, diskGib, seedImagePath(ctx, id), baselineManifestPath(ctx, id), ctx.store.dir(id))
    : await emptySeedImage(ctx.paths, diskGib, seedImagePath(ctx, id), baselineManifestPath(ctx, id), ctx.store.dir(id));
  record.seed.built_at_ns = String(image.builtAtNs);
  await layerWorkspaceDisk(ctx, record, image.path, "raw");
  // Templates are saved without a NIC; a networked machine differs (G10) and boots cold.
  const template =
    record.network_policy === "off" ? await ensureBootTemplate(ctx.paths, runtime, env, { ...shape, diskGib }).catch(() => undefined) : undefined;
  if (template) {
    const vm = await bootWorkspace(ctx, record, {
      kind: "restore",
      statePath: template.statePath,
      diskPath: template.diskPath,
      mode: "template_restore",
      ...(template.memoryPath ? { memoryPath: template.memoryPath } : {}),
    });
    return { vm, template };
  }
  await layerDisk(ctx, record, env.imagePath, "raw");
  return { vm: await bootWorkspace(ctx, record, { kind: "cold" }), template: undefined };
}

/** Deletes workspaces whose TTL ran out since their last mutating activity. */
export async function reapExpired(ctx: WorkspaceContext): Promise<string[]> {
  const reaped: string[] = [];
  for (const record of await ctx.store.list()) {
    const expires = expiresAt(record);
    if (expires && Date.parse(expires) < Date.now()) {
      await deleteWorkspace(ctx, record.id).catch(() => undefined);
      reaped.push(record.id);
    }
  }
  return reaped;
}

export async function listWorkspaces(ctx: WorkspaceContext): Promise<{ count: number; workspaces: WorkspaceView[] }> {
  await ctx.recoverInterrupted();
  await reapExpired(ctx);
  const records = await ctx.store.list();
  for (const record of records) await reconcileVm(ctx, record);
  records.sort((a, b) => b.last_activity_at.localeCompare(a.last_activity_at));
  return { count: records.length, workspaces: records.map(viewOf) };
}

/** One workspace's view plus the host disk it uses (overlays, snapshots), which costs a directory walk. */
export async function workspaceStatus(ctx: WorkspaceContext, ref: string): Promise<WorkspaceView & { disk_used_bytes: number }> {
  await ctx.recoverInterrupted();
  const record = await ctx.store.resolve(ref);
  await reconcileVm(ctx, record);
  return { ...viewOf(record), disk_used_bytes: await allocatedBytes(ctx.store.dir(record.id)) };
}

export interface UpdateWorkspaceOptions {
  name?: string | null;
  labels?: Record<string, string>;
  clearLabels?: string[];
}

export async function updateWorkspace(ctx: WorkspaceContext, ref: string, changes: UpdateWorkspaceOptions): Promise<WorkspaceView> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      checkLabels(changes.labels ?? {});
      const claim = await ctx.store.claimName(changes.name ? validateName(changes.name) : null, record.id);
      try {
        if (changes.name !== undefined) record.name = changes.name;
        record.labels = { ...record.labels, ...changes.labels };
        for (const key of changes.clearLabels ?? []) delete record.labels[key];
        record.updated_at = nowIso();
        await ctx.store.write(record);
      } finally {
        await claim.release();
      }
      return viewOf(record);
    },
    "update",
  );
}

export async function stopWorkspace(ctx: WorkspaceContext, ref: string): Promise<WorkspaceView> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      if (await reconcileVm(ctx, record)) {
        const runtime = await ctx.runtime();
        const handle = vmHandle(record)!;
        try {
          await runtime.backend.stop(await runtime.backend.attach(handle, 10_000));
        } catch {
          await runtime.backend.kill(handle);
        }
      }
      record.vm = null;
      record.updated_at = nowIso();
      await ctx.store.write(record);
      await releaseUnmappedForkMemory(ctx.paths, async () => (await ctx.runtime()).backend);
      return viewOf(record);
    },
    "stop",
  );
}

/** Boots a stopped workspace from its disk (files kept; processes and /tmp start fresh). */
export async function startWorkspace(ctx: WorkspaceContext, ref: string): Promise<WorkspaceView> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      if (await reconcileVm(ctx, record)) return viewOf(record);
      const vm = await bootWorkspace(ctx, record, { kind: "cold" });
      vm.detach();
      await ctx.store.write(record);
      return viewOf(record);
    },
    "start",
  );
}

export async function deleteWorkspace(ctx: WorkspaceContext, ref: string): Promise<{ workspace_id: string; deleted: true }> {
  return withLockedWorkspace(
    ctx,
    ref,
    async (record) => {
      // The record goes first (store.remove renames the directory away): a crash after that leaves
      // a VM no record owns, which the next pyro command stops.
      await ctx.store.remove(record.id, async () => {
        const handle = vmHandle(record);
        if (handle) await (await ctx.runtime()).backend.kill(handle);
      });
      if (record.vm) await releaseUnmappedForkMemory(ctx.paths, async () => (await ctx.runtime()).backend);
      return { workspace_id: record.id, deleted: true as const };
    },
    "delete",
  );
}
