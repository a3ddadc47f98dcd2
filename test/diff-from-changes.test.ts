import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { encodeManifest, type ManifestEntry } from "../src/workspaces/tree-manifest.js";
import { type ChangeSources, changedEntries, rebuildCurrentManifest } from "../src/workspaces/workspace-diff.js";

/**
 * A model of /workspace on ext4: inodes (a file may have several names), and ctimes set the way
 * ext4 sets them (a change of contents, mode or link count sets the inode's; creating, removing or
 * renaming a name sets its directory's, and a rename also the renamed inode's). Used to check that
 * a diff rebuilt from what the guest's tree.changes sends equals the one from a full walk.
 */
interface Node {
  ino: number;
  type: "f" | "d" | "l";
  mode: number;
  size: number;
  ctime: bigint;
  target: string;
  children: Map<string, Node>;
}

const BUILT = 1_000n;

class Model {
  private nextIno = 2;
  private clock = BUILT;
  readonly root: Node = this.node("d", 0n);

  node(type: Node["type"], ctime: bigint): Node {
    return { ino: this.nextIno++, type, mode: type === "l" ? 0o777 : 0o644, size: 0, ctime, target: type === "l" ? "t" : "", children: new Map() };
  }
  tick(): bigint {
    return ++this.clock;
  }
  /** Every (directory, name, node) below `dir`, parents first. */
  names(dir = this.root, out: { dir: Node; name: string; node: Node; path: string }[] = [], prefix = ""): typeof out {
    for (const [name, node] of [...dir.children].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const path = prefix ? `${prefix}/${name}` : name;
      out.push({ dir, name, node, path });
      if (node.type === "d") this.names(node, out, path);
    }
    return out;
  }
  directories(): { node: Node; path: string }[] {
    return [{ node: this.root, path: "" }, ...this.names().filter((n) => n.node.type === "d")];
  }
  linkCount(node: Node): number {
    return node.type === "d" ? 2 : this.names().filter((n) => n.node === node).length;
  }
  /** The manifest of `dir` (paths relative to it), as tree.manifest walks it. */
  manifest(dir = this.root): ManifestEntry[] {
    return this.names(dir).map(({ node, path }) => ({
      path,
      type: node.type,
      mode: node.mode,
      size: node.type === "f" ? node.size : 4096,
      mtimeNs: 0n,
      ctimeNs: node.ctime,
      ino: node.ino,
      nlink: this.linkCount(node),
      target: node.target,
    }));
  }
  /** What the agent's tree.changes sends (the same rules as workspace_disk.rs, on the model). */
  changes(since: bigint): ManifestEntry[] {
    const all = this.manifest();
    const byPath = new Map(all.map((e) => [e.path, e]));
    const sent = new Set<string>();
    const out: ManifestEntry[] = [];
    const parentOf = (p: string) => p.slice(0, Math.max(0, p.lastIndexOf("/")));
    const send = (p: string) => {
      if (!p || sent.has(p)) return;
      send(parentOf(p));
      sent.add(p);
      out.push(byPath.get(p)!);
    };
    for (const e of all) {
      const parent = parentOf(e.path);
      if (e.ctimeNs > since || parent === "" || byPath.get(parent)!.ctimeNs > since) send(e.path);
    }
    return out;
  }
  subtree(path: string): ManifestEntry[] {
    const dir = this.directories().find((d) => d.path === path)!.node;
    return this.manifest(dir);
  }
}

const name = fc.constantFrom("a", "b", "c", "d", "e");
const op = fc.oneof(
  fc.record({ kind: fc.constant("create" as const), dir: fc.nat(), name, type: fc.constantFrom("f" as const, "d" as const, "l" as const) }),
  fc.record({ kind: fc.constant("modify" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("chmod" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("remove" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("rename" as const), at: fc.nat(), dir: fc.nat(), name }),
  fc.record({ kind: fc.constant("hardlink" as const), at: fc.nat(), dir: fc.nat(), name }),
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

function apply(m: Model, o: Op, ctime: bigint): void {
  const names = m.names();
  const dirs = m.directories();
  if (o.kind === "create") {
    const dir = dirs[o.dir % dirs.length]!.node;
    if (dir.children.has(o.name)) return;
    dir.children.set(o.name, m.node(o.type, ctime));
    dir.ctime = ctime;
    return;
  }
  if (!names.length) return;
  const at = names[o.at % names.length]!;
  if (o.kind === "modify" && at.node.type === "f") {
    at.node.size += 1;
    at.node.ctime = ctime;
  } else if (o.kind === "chmod" && at.node.type !== "l") {
    at.node.mode ^= 0o100;
    at.node.ctime = ctime;
  } else if (o.kind === "remove") {
    at.dir.children.delete(at.name);
    at.dir.ctime = ctime;
    if (at.node.type === "f") at.node.ctime = ctime; // its link count changed
  } else if (o.kind === "rename" || o.kind === "hardlink") {
    const to = dirs[o.dir % dirs.length]!;
    if (to.path === at.path || to.path.startsWith(`${at.path}/`)) return; // into itself
    if (o.kind === "hardlink" && at.node.type !== "f") return;
    const there = to.node.children.get(o.name);
    if (there === at.node || (there && (there.type === "d" || at.node.type === "d"))) return;
    if (there?.type === "f") there.ctime = ctime;
    if (o.kind === "rename") {
      at.dir.children.delete(at.name);
      at.dir.ctime = ctime;
    }
    to.node.children.set(o.name, at.node);
    to.node.ctime = ctime;
    at.node.ctime = ctime;
  }
}

/** The seed image's inode numbers (as saved before the guest's changes) and the guest's subtrees, from the model. */
function sourcesOf(m: Model, seedInodes: Map<string, number>): ChangeSources {
  return {
    baselineInodes: async (paths) => new Map(paths.filter((p) => seedInodes.has(p)).map((p) => [p, seedInodes.get(p)!])),
    fetchSubtree: async (dir) => m.subtree(dir),
  };
}

const sorted = (entries: ManifestEntry[]) => [...entries].sort((a, b) => (a.path < b.path ? -1 : 1));

describe("diff from the guest's changes since the baseline", () => {
  it("rebuilds exactly the manifest a full walk gives, whatever was created, changed, removed, renamed or linked", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 25 }), fc.array(op, { minLength: 1, maxLength: 25 }), async (seedOps, guestOps) => {
        const m = new Model();
        for (const o of seedOps) apply(m, o, 1n); // the seed image: every ctime at or before BUILT
        const baseline = m.manifest();
        const seedInodes = new Map(baseline.map((e) => [e.path, e.ino]));
        for (const o of guestOps) apply(m, o, m.tick());
        const full = m.manifest();
        // The saved baseline has no inode numbers; the seed image is asked for those it needs.
        const saved = encodeManifest(baseline.map((e) => ({ ...e, ino: 0 })));
        const iterable = await rebuildCurrentManifest(saved, m.changes(BUILT), BUILT, sourcesOf(m, seedInodes));
        assert.ok(iterable);
        const rebuilt = [...iterable];
        const withoutInodes = (entries: ManifestEntry[]) => entries.map((e) => ({ ...e, ino: 0 }));
        assert.deepEqual(sorted(withoutInodes(rebuilt)), sorted(withoutInodes(full)));
        assert.deepEqual(changedEntries(saved, rebuilt, BUILT), changedEntries(saved, full, BUILT));
      }),
      { numRuns: 300 },
    );
  });

  it("fetches a moved directory whole, and asks the seed image only about changed directories holding unchanged ones", async () => {
    const m = new Model();
    for (const o of [
      { kind: "create", dir: 0, name: "a", type: "d" },
      { kind: "create", dir: 1, name: "b", type: "d" },
      { kind: "create", dir: 2, name: "c", type: "f" },
    ] as Op[])
      apply(m, o, 1n);
    const baseline = m.manifest();
    const seedInodes = new Map(baseline.map((e) => [e.path, e.ino]));
    const asked = async (ops: Op[]) => {
      for (const o of ops) apply(m, o, m.tick());
      const calls: string[] = [];
      const sources = sourcesOf(m, seedInodes);
      await rebuildCurrentManifest(encodeManifest(baseline), m.changes(BUILT), BUILT, {
        baselineInodes: (paths) => {
          calls.push(`inodes ${paths.join(",")}`);
          return sources.baselineInodes(paths);
        },
        fetchSubtree: (dir) => {
          calls.push(`fetch ${dir}`);
          return sources.fetchSubtree(dir);
        },
      });
      return calls;
    };
    assert.deepEqual(await asked([{ kind: "modify", at: 2 }]), []);
    // A file is added to a (a changed directory holding the unchanged a/b): the same a, nothing fetched.
    assert.deepEqual(await asked([{ kind: "create", dir: 1, name: "d", type: "f" }]), ["inodes a"]);
    // a moves to e: e holds the unchanged b, whose file c was not sent, so e comes whole.
    assert.deepEqual(await asked([{ kind: "rename", at: 0, dir: 0, name: "e" }]), ["fetch e"]);
  });

  it("asks for one full manifest, not a fetch per directory, when a guest claims more than 64 moved directories", async () => {
    const entry = (path: string, type: ManifestEntry["type"], ctimeNs: bigint, ino: number): ManifestEntry => ({
      path,
      type,
      mode: 0o755,
      size: 4096,
      mtimeNs: 0n,
      ctimeNs,
      ino,
      nlink: 2,
      target: "",
    });
    const baseline: ManifestEntry[] = [];
    const changed: ManifestEntry[] = [];
    for (let i = 0; i < 65; i++) {
      baseline.push(entry(`h${i}`, "d", 1n, 0), entry(`h${i}/old`, "d", 1n, 0));
      // Each changed, holding an unchanged directory, under an inode the seed image never had there.
      changed.push(entry(`h${i}`, "d", BUILT + 1n, 10_000 + i), entry(`h${i}/old`, "d", 1n, 20_000 + i));
    }
    let fetches = 0;
    const rebuilt = await rebuildCurrentManifest(encodeManifest(baseline), changed, BUILT, {
      baselineInodes: async (paths) => new Map(paths.map((p) => [p, 1])),
      fetchSubtree: async () => {
        fetches++;
        return [];
      },
    });
    assert.equal(rebuilt, undefined);
    assert.equal(fetches, 0);
  });
});
