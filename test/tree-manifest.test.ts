import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { encodeManifest, type ManifestEntry, manifestEntries, parseManifest } from "../src/workspaces/tree-manifest.js";
import { TREE_MANIFEST_LIMITS } from "../src/workspaces/workspace-limits.js";

const entry = (path: string, fields: Partial<ManifestEntry> = {}): ManifestEntry => ({
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

const tooMany = (e: unknown) => isPyroError(e, "GUEST_OPERATION_FAILED") && /more than \d+ files and directories/.test(e.message);

describe("tree manifests parsed a record at a time, with an entry limit", () => {
  it("yields what the whole-list parse returns, and past the limit fails after exactly the limit's entries", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 40 }), (count, limit) => {
        const entries = [entry("d", { type: "d" }), ...Array.from({ length: count }, (_, i) => entry(`d/f${i}`, { ino: i }))];
        const bytes = encodeManifest(entries);
        const seen: ManifestEntry[] = [];
        if (entries.length <= limit) {
          for (const e of manifestEntries(bytes, limit)) seen.push(e);
          assert.deepEqual(seen, entries);
          assert.deepEqual(parseManifest(bytes, limit), entries);
        } else {
          assert.throws(() => {
            for (const e of manifestEntries(bytes, limit)) seen.push(e);
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
      fc.property(fc.array(piece, { maxLength: 30 }), fc.integer({ min: 1, max: 4 }), (pieces, limit) => {
        let yielded = 0;
        try {
          for (const e of manifestEntries(Buffer.from(pieces.join(""), "utf8"), limit)) {
            yielded++;
            assert.ok(e.path && !e.path.startsWith("/") && !e.path.split("/").some((p) => p === "" || p === "." || p === ".."), e.path);
            assert.ok(Number.isSafeInteger(e.size) && Number.isSafeInteger(e.ino) && Number.isSafeInteger(e.nlink));
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
