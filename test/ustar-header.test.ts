import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { tarHeader } from "../src/workspaces/tar-header.js";
import { TAR_BLOCK, type TarFields, writeUstarHeader } from "../src/workspaces/ustar-header.js";

describe("ustar header fast path", () => {
  it("is byte for byte the tar library's header wherever it applies, and declines where a pax header is needed", () => {
    const text = fc.string({ unit: fc.constantFrom("a", "b", "/", ".", "-", " ", "é", "\u00ff", "x"), minLength: 1, maxLength: 110 });
    fc.assert(
      fc.property(
        fc.record({
          path: text,
          type: fc.constantFrom<TarFields["type"]>("File", "Directory", "SymbolicLink", "Link"),
          mode: fc.integer({ min: 0, max: 0o7777 }),
          mtime: fc.integer({ min: -1000, max: 2 ** 36 * 1000 }).map((ms) => new Date(ms)),
          size: fc.oneof(fc.integer({ min: 0, max: 10_000_000 }), fc.integer({ min: 0, max: 2 ** 36 })),
          linkpath: fc.option(text, { nil: undefined }),
        }),
        (f) => {
          const fields: TarFields = { ...f, uid: 0, gid: 0, ...(f.linkpath === undefined ? {} : { linkpath: f.linkpath }) };
          // Written where export writes it: into a buffer already holding other bytes, past its start.
          const target = Buffer.alloc(7 + TAR_BLOCK, 0xa5);
          const fast = writeUstarHeader(target, 7, fields) ? target.subarray(7) : undefined;
          if (fast) assert.ok(fast.equals(tarHeader(fields)), JSON.stringify(fields));
          const simple = /^[ -~]{1,100}$/.test(f.path) && (f.linkpath === undefined || /^[ -~]{1,100}$/.test(f.linkpath));
          const fits = f.size < 8 ** 11 && f.mtime.getTime() >= 0 && f.mtime.getTime() / 1000 < 8 ** 11;
          assert.equal(fast !== undefined, simple && fits);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
