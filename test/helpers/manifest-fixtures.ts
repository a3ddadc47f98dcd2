import type { ManifestEntry } from "../../src/workspaces/tree-manifest.js";

/** A manifest entry for tests: a 1-byte regular file at `path` unless `fields` say otherwise. */
export const manifestEntry = (path: string, fields: Partial<ManifestEntry> = {}): ManifestEntry => ({
  path,
  type: "f",
  mode: 0o644,
  size: 1,
  mtimeNs: 0n,
  ctimeNs: 0n,
  ino: 0,
  nlink: 1,
  target: "",
  ...fields,
});
