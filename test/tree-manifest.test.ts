import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { encodeManifest, isWellFormedHeader, type ManifestEntry, manifestEntries, manifestEntryAt, parseManifest } from "../src/workspaces/tree-manifest.js";
import { ManifestIndex, changedEntries } from "../src/workspaces/workspace-diff.js";
import { TREE_MANIFEST_LIMITS } from "../src/workspaces/workspace-limits.js";
import { manifestEntry } from "./helpers/manifest-fixtures.js";

const entry = manifestEntry;
/** FNV-1a's standard 32-bit offset basis (what the index's hash started from before it was seeded). */
const FNV_OFFSET_BASIS = 0x811c9dc5;

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
  it("tells apart paths whose index hashes collide ('f55zx' and 'fgpcd' share one from FNV's standard start)", () => {
    const baseline = [entry("f55zx", { size: 1 }), entry("fgpcd", { size: 2 })];
    const colliding = (entries: ManifestEntry[]) => new ManifestIndex(encodeManifest(entries), undefined, FNV_OFFSET_BASIS);
    assert.deepEqual(changedEntries(colliding(baseline), [entry("fgpcd", { size: 2 }), entry("f55zx", { size: 3 })], 10n), [
      { path: "f55zx", status: "modified", before: baseline[0], after: entry("f55zx", { size: 3 }) },
    ]);
    assert.deepEqual(
      changedEntries(colliding(baseline), [entry("fgpcd", { size: 2 })], 10n).map((c) => `${c.status} ${c.path}`),
      ["deleted f55zx"],
    );
    assert.deepEqual(
      changedEntries(colliding([baseline[0]!]), [entry("f55zx", { size: 1 }), entry("fgpcd", { size: 2 })], 10n).map((c) => `${c.status} ${c.path}`),
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

/** The outcome of a parse: its entries, or the code and message it failed with. */
function outcome(parse: () => ManifestEntry[]): { entries: ManifestEntry[] } | { code: string; message: string } {
  try {
    return { entries: parse() };
  } catch (error) {
    assert.ok(isPyroError(error), String(error));
    return { code: error.code, message: error.message };
  }
}

describe("the baseline's index, checked in place", () => {
  it("indexes paths chosen to share home slots under a fixed hash in linear time (its hash is seeded per index)", () => {
    // 60k paths whose FNV-1a hash from the standard start lands in the first 4000 of the table's
    // 131072 slots: with that fixed hash they formed one probe run, and indexing took ~13 s.
    const count = 60_000;
    const mask = 131_071;
    const paths: string[] = [];
    for (let i = 0; paths.length < count; i++) {
      const path = `f${i.toString(36)}`;
      let hash = FNV_OFFSET_BASIS;
      for (let k = 0; k < path.length; k++) hash = Math.imul(hash ^ path.charCodeAt(k), 0x01000193);
      if ((hash & mask) < 4000) paths.push(path);
    }
    const bytes = encodeManifest(paths.map((path, i) => entry(path, { ino: i + 10 })));
    const started = performance.now();
    const index = new ManifestIndex(bytes);
    const ms = performance.now() - started;
    assert.equal(index.count, count);
    assert.equal(index.find(paths[count - 1]!), count - 1);
    assert.ok(ms < 3000, `indexing took ${Math.round(ms)} ms`);
  });

  it("accepts exactly the manifests the any-order parse accepts, and finds each path's record (property)", () => {
    // Names include a byte that is not UTF-8 and the ASCII text that shows it ("a\\xff"), so two
    // different byte strings can be one path.
    const component = fc.constantFrom(
      Buffer.from("a"),
      Buffer.from("b"),
      Buffer.from([0x61, 0xff]),
      Buffer.from("a\\xff"),
      Buffer.from("é"),
      Buffer.from("."),
      Buffer.from(".."),
    );
    const path = fc.array(component, { minLength: 1, maxLength: 3 }).map((parts) => Buffer.concat(parts.flatMap((p, i) => (i ? [Buffer.from("/"), p] : [p]))));
    const header = fc.oneof(
      { weight: 8, arbitrary: fc.tuple(fc.constantFrom("f", "d", "l"), fc.constantFrom("644", "755"), fc.nat(3)).map(([t, m, n]) => `${t} ${m} ${n} 5 6 7 1`) },
      {
        weight: 1,
        arbitrary: fc.constantFrom("x 644 1 5 6 7 1", "f 648 1 5 6 7 1", "f 644 99999999999999999999 5 6 7 1", "f 644 1 5 6 7", "f  644 1 5 6 7 1"),
      },
    );
    const record = fc.tuple(header, path, fc.constantFrom("", "t")).map(([h, p, t]) => Buffer.concat([Buffer.from(`${h}\0`), p, Buffer.from(`\0${t}\0`)]));
    fc.assert(
      fc.property(fc.array(record, { maxLength: 8 }), fc.boolean(), (records, cut) => {
        let bytes = Buffer.concat(records);
        if (cut && bytes.length > 0) bytes = bytes.subarray(0, bytes.length - 1);
        const expected = outcome(() => parseManifest(bytes));
        let index: ManifestIndex | undefined;
        const actual = outcome(() => {
          index = new ManifestIndex(bytes);
          return Array.from({ length: index.count }, (_, i) => index!.entry(i));
        });
        assert.equal(
          "code" in actual ? actual.code : "ok",
          "code" in expected ? expected.code : "ok",
          "code" in expected ? expected.message : "the parse accepts it",
        );
        if (!("entries" in expected) || !("entries" in actual)) return;
        assert.deepEqual(actual.entries, expected.entries);
        expected.entries.forEach((e, i) => {
          assert.equal(index!.find(e.path), i);
          assert.equal(index!.type(i), e.type);
          assert.ok(index!.sameShape(i, e));
          assert.ok(!index!.sameShape(i, { ...e, mode: e.mode ^ 1 }));
          assert.ok(!index!.sameShape(i, { ...e, target: `${e.target}x` }));
        });
        assert.equal(index!.find("zz"), undefined);
      }),
      { numRuns: 400 },
    );
  });

  it("refuses two records whose paths show as one (a byte that is not UTF-8, and its escaped text), in either order", () => {
    const record = (path: Buffer, type = "f") => Buffer.concat([Buffer.from(`${type} 644 1 5 6 7 1\0`), path, Buffer.from("\0\0")]);
    const raw = Buffer.from([0x61, 0xff]);
    const escaped = Buffer.from("a\\xff");
    for (const [first, second] of [
      [raw, escaped],
      [escaped, raw],
    ] as const) {
      assert.throws(
        () => new ManifestIndex(Buffer.concat([record(first), record(second)])),
        (e) => isPyroError(e, "GUEST_PROTOCOL_ERROR") && /listed twice/.test(e.message),
      );
      // As a directory and an entry under the other: found as its parent.
      const index = new ManifestIndex(Buffer.concat([record(first, "d"), record(Buffer.concat([second, Buffer.from("/x")]))]));
      assert.equal(index.find("a\\xff/x"), 1);
    }
  });

  it("checks a record header in place, and reads it, exactly as the record grammar says (property)", () => {
    // The grammar, written as a pattern (the reader checks the bytes in place, without one).
    const grammar = /^([fdlo]) ([0-7]{1,5}) (\d{1,20}) (-?\d{1,30}) (-?\d{1,30}) (\d{1,20}) (\d{1,20})$/;
    const expectedEntry = (h: string): Omit<ManifestEntry, "path" | "target"> | undefined => {
      const m = grammar.exec(h);
      if (!m || ![m[3], m[6], m[7]].every((n) => Number.isSafeInteger(Number(n)))) return undefined;
      const [type, mode, size, mtime, ctime, ino, nlink] = m.slice(1) as string[];
      return {
        type: type as ManifestEntry["type"],
        mode: parseInt(mode!, 8) & 0o7777,
        size: Number(size),
        mtimeNs: BigInt(mtime!),
        ctimeNs: BigInt(ctime!),
        ino: Number(ino),
        nlink: Number(nlink),
      };
    };
    const token = fc.constantFrom(
      "f",
      "d",
      "l",
      "o",
      "x",
      " ",
      "  ",
      "-",
      "0",
      "7",
      "8",
      "9",
      "644",
      "12345",
      "123456",
      "9".repeat(16),
      "9".repeat(21),
      "1".repeat(31),
      "\u00e9",
    );
    const header = fc.oneof(
      fc.array(token, { maxLength: 16 }).map((t) => t.join("")),
      fc
        .tuple(
          fc.constantFrom("f", "d", "x"),
          fc.array(fc.oneof(fc.constantFrom("-1", "0", "755", "8", "9007199254740991", "9007199254740992", "1".repeat(30), "1".repeat(31)), token), {
            minLength: 5,
            maxLength: 7,
          }),
        )
        .map(([t, fields]) => `${t} ${fields.join(" ")}`),
    );
    fc.assert(
      fc.property(header, (h) => {
        const head = Buffer.from(h, "latin1");
        const bytes = Buffer.concat([head, Buffer.from("\0p\0\0")]);
        const expected = expectedEntry(h);
        let read: ManifestEntry | undefined;
        try {
          read = manifestEntryAt(bytes, 0);
        } catch (error) {
          assert.ok(isPyroError(error, "GUEST_PROTOCOL_ERROR"), String(error));
        }
        assert.deepEqual(read, expected && { ...expected, path: "p", target: "" }, h);
        assert.equal(isWellFormedHeader(bytes, 0, head.length), expected !== undefined, h);
      }),
      { numRuns: 1000 },
    );
  });
});
