import { join } from "node:path";
import type { WorkspaceContext } from "./workspace-context.js";

/**
 * Where a workspace's disks live in its state directory. Kept apart from the boot code so that
 * commands that only read a disk (export, diff) do not load what boots a VM.
 */

export function diskPath(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "disk.qcow2");
}

/** The live /workspace disk: a qcow2 chain ending in the seed image. */
export function workspaceDiskPath(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "workspace.qcow2");
}

/** The immutable ext4 image built from the seed at create: the /workspace disk's base and diff's baseline. */
export function seedImagePath(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "seed.ext4");
}

/** What the seed image holds (tree-manifest.ts records), for diff. */
export function baselineManifestPath(ctx: WorkspaceContext, id: string): string {
  return join(ctx.store.dir(id), "baseline.manifest");
}
