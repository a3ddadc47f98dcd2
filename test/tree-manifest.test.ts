import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { encodeManifest, type ManifestEntry, manifestEntries, parseManifest } from "../src/workspaces/tree-manifest.js";
import { changedEntries } from "../src/workspaces/workspace-diff.js";
import { TREE_MANIFEST_LIMITS } from "../src/workspaces/workspace-limits.js";
import { manifestEntry } from "./helpers/manifest-fixtures.js";

const entry = manifestEntry;

const tooMany = (e: unknown) => isPyroError(e, "GUEST_OPERATION_FAILED") && /more than \d+ files and directories/.test(e.message);

/** A tree of names (null: a file) in the agent's walk order: a directory's entries together, sorted by bytes, after its record; a stack of directories to walk. */
function agentOrder(tree: Record<string, unknown>): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  const stack: [string, Record<string, unknown>][] = [["", tree]];
  let ino = 1;
  while (stack.length) {
    const [dir, node] = stack.pop()!;
    const names = Object.keys(node).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const subdirs: [string, Record<string, unknown>][] = [];
    for (const name of names) {
      const path = dir ? `${dir}/${name}` : name;
      const child = node[name];
      out.push(entry(path, { type: child ? "d" : "f", ino: ino++ }));
      if (child) subdirs.push([path, child as Record<string, unknown>]);
    }
    stack.push(...subdirs.reverse());
  }
  return out;
}

describe("tree manifests parsed a record at a time, with an entry limit", () => {
  it("reads the agent's walk order keeping only what is pending, with the same result as the any-order parse (property)", () => {
    const name = fc.constantFrom("a", "b", "B", "a b", "é", "z", "\u{1F600}", "\uE000", "0");
    const tree = fc.letrec((tie) => ({
      node: fc.dictionary(name, fc.oneof({ depthSize: "small", withCrossShrink: true }, fc.constant(null), tie("node")), { maxKeys: 4 }),
    })).node as fc.Arbitrary<Record<string, unknown>>;
    fc.assert(
      fc.property(tree, (t) => {
        const entries = agentOrder(t);
        const bytes = encodeManifest(entries);
        assert.deepEqual(parseManifest(bytes, { order: "walk" }), entries);
        assert.deepEqual(parseManifest(bytes), entries);
      }),
      { numRuns: 200 },
    );
  });

  it("in walk order refuses a name listed twice, names out of byte order, a directory's entries split, and entries below a non-directory", () => {
    const walk = (entries: ManifestEntry[]) => () => parseManifest(encodeManifest(entries), { order: "walk" });
    const refused = (e: unknown) => isPyroError(e, "GUEST_PROTOCOL_ERROR");
    const d = (path: string) => entry(path, { type: "d" });
    assert.throws(walk([entry("a"), entry("a")]), refused);
    assert.throws(walk([entry("b"), entry("a")]), refused);
    // "\uE000" sorts after U+1F600 as UTF-16 but before it as bytes (UTF-8), as the agent sorts.
    assert.doesNotThrow(walk([entry("\uE000"), entry("\u{1F600}")]));
    assert.throws(walk([entry("\u{1F600}"), entry("\uE000")]), refused);
    assert.throws(walk([d("a"), d("b"), entry("a/x"), entry("b/y"), entry("a/z")]), refused);
    assert.throws(walk([d("a"), entry("a/x"), d("a"), entry("a/y")]), refused);
    assert.throws(walk([entry("a", { type: "l", target: "/etc" }), entry("a/passwd")]), refused);
    assert.throws(walk([entry("x/y")]), refused);
    assert.equal(parseManifest(encodeManifest([d("a"), d("b"), entry("b/y"), entry("a/x")]), { order: "walk" }).length, 4);
  });

  it("yields what the whole-list parse returns, and past the limit fails after exactly the limit's entries", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 40 }), (count, limit) => {
        const entries = [entry("d", { type: "d" }), ...Array.from({ length: count }, (_, i) => entry(`d/f${i}`, { ino: i }))];
        const bytes = encodeManifest(entries);
        const seen: ManifestEntry[] = [];
        if (entries.length <= limit) {
          for (const e of manifestEntries(bytes, { maxEntries: limit })) seen.push(e);
          assert.deepEqual(seen, entries);
          assert.deepEqual(parseManifest(bytes, { maxEntries: limit }), entries);
        } else {
          assert.throws(() => {
            for (const e of manifestEntries(bytes, { maxEntries: limit })) seen.push(e);
          }, tooMany);
          assert.equal(seen.length, limit);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("never yields more than the limit, nor anything but plain relative paths, whatever the bytes", () => {
    const piece = fc.oneof(
      fc.constantFrom(
        "f 644 1 0 0 1 1\0",
        "d 755 0 0 0 2 2\0",
        "a\0",
        "a/b\0",
        "b\0",
        "../x\0",
        "\0",
        "l 777 3 -1 -1 3 1\0",
        "f 0 99999999999999999999 0 0 0 0\0",
      ),
      fc.string({ maxLength: 6 }),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }), fc.integer({ min: 1, max: 4 }), fc.constantFrom("walk", "any" as const), (pieces, limit, order) => {
        let yielded = 0;
        // What an archive built from the records relies on, whichever order was parsed.
        const names = new Set<string>();
        const directories = new Set<string>([""]);
        try {
          for (const e of manifestEntries(Buffer.from(pieces.join(""), "utf8"), { maxEntries: limit, order })) {
            yielded++;
            assert.ok(e.path && !e.path.startsWith("/") && !e.path.split("/").some((p) => p === "" || p === "." || p === ".."), e.path);
            assert.ok(Number.isSafeInteger(e.size) && Number.isSafeInteger(e.ino) && Number.isSafeInteger(e.nlink));
            assert.ok(!names.has(e.path), `${e.path} listed twice`);
            assert.ok(directories.has(e.path.includes("/") ? e.path.slice(0, e.path.lastIndexOf("/")) : ""), `${e.path} not below a listed directory`);
            names.add(e.path);
            if (e.type === "d") directories.add(e.path);
          }
        } catch (error) {
          assert.ok(isPyroError(error, "GUEST_PROTOCOL_ERROR") || tooMany(error), String(error));
        }
        assert.ok(yielded <= limit);
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a hostile manifest of many tiny records at the declared limit, holding one record at a time", () => {
    const records = TREE_MANIFEST_LIMITS.entries + 10;
    // `f 0 0 0 0 0 0\0<n>\0\0`: ~20 bytes a record, well inside the byte limit.
    const bytes = Buffer.from(Array.from({ length: records }, (_, i) => `f 0 0 0 0 0 0\0${i.toString(36)}\0\0`).join(""), "latin1");
    assert.ok(bytes.length < TREE_MANIFEST_LIMITS.bytes);
    let count = 0;
    assert.throws(() => {
      for (const _ of manifestEntries(bytes)) count++;
    }, tooMany);
    assert.equal(count, TREE_MANIFEST_LIMITS.entries);
  });
});

/** The comparison as first written (both manifests as lists, every entry an object): the reference. */
function referenceChanges(baseline: ManifestEntry[], current: ManifestEntry[], builtAtNs: bigint) {
  const before = new Map(baseline.map((e) => [e.path, e]));
  const changes: { path: string; status: string; before?: ManifestEntry; after?: ManifestEntry }[] = [];
  const seen = new Set<string>();
  for (const after of current) {
    seen.add(after.path);
    const base = before.get(after.path);
    if (!base) {
      if (after.type !== "d") changes.push({ path: after.path, status: "added", after });
      continue;
    }
    if (base.type === "d" && after.type === "d") continue;
    if (base.type !== after.type) {
      if (base.type === "d") changes.push({ path: after.path, status: "added", after });
      else if (after.type === "d") changes.push({ path: after.path, status: "deleted", before: base });
      else changes.push({ path: after.path, status: "modified", before: base, after });
      continue;
    }
    if (base.mode !== after.mode || (after.type === "f" && base.size !== after.size) || base.target !== after.target || after.ctimeNs > builtAtNs)
      changes.push({ path: after.path, status: "modified", before: base, after });
  }
  for (const base of baseline) if (!seen.has(base.path) && base.type !== "d") changes.push({ path: base.path, status: "deleted", before: base });
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

describe("diff's comparison without a list of objects per manifest", () => {
  it("tells apart paths whose index hashes collide ('f55zx' and 'fgpcd' share one)", () => {
    const baseline = [entry("f55zx", { size: 1 }), entry("fgpcd", { size: 2 })];
    assert.deepEqual(changedEntries(encodeManifest(baseline), [entry("fgpcd", { size: 2 }), entry("f55zx", { size: 3 })], 10n), [
      { path: "f55zx", status: "modified", before: baseline[0], after: entry("f55zx", { size: 3 }) },
    ]);
    assert.deepEqual(
      changedEntries(encodeManifest(baseline), [entry("fgpcd", { size: 2 })], 10n).map((c) => `${c.status} ${c.path}`),
      ["deleted f55zx"],
    );
    assert.deepEqual(
      changedEntries(encodeManifest([baseline[0]!]), [entry("f55zx", { size: 1 }), entry("fgpcd", { size: 2 })], 10n).map((c) => `${c.status} ${c.path}`),
      ["added fgpcd"],
    );
  });

  it("finds exactly what the list-based comparison finds, with the same records (property)", () => {
    const record = fc.record({
      type: fc.constantFrom("f", "d", "l") as fc.Arbitrary<ManifestEntry["type"]>,
      mode: fc.constantFrom(0o644, 0o755),
      size: fc.integer({ min: 0, max: 3 }),
      ctimeNs: fc.bigInt({ min: 0n, max: 20n }),
      target: fc.constantFrom("", "a", "b c"),
    });
    // Top-level names only: any mix of types is a valid manifest.
    const manifest = fc.dictionary(fc.constantFrom("a", "b", "c", "d", "e", "f g"), record, { maxKeys: 6 });
    fc.assert(
      fc.property(manifest, manifest, fc.bigInt({ min: 0n, max: 20n }), (base, cur, built) => {
        const list = (m: Record<string, Omit<ManifestEntry, "path" | "mtimeNs" | "ino" | "nlink">>) =>
          Object.entries(m).map(([path, r]) => entry(path, { ...r, target: r.type === "l" ? r.target : "" }));
        const baseline = list(base);
        const current = list(cur);
        const streamed = changedEntries(encodeManifest(baseline), manifestEntries(encodeManifest(current)), built);
        assert.deepEqual(streamed, referenceChanges(baseline, current, built));
      }),
      { numRuns: 300 },
    );
  });
});
