import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { encodeFrame, FrameDecoder, FRAME_MAGIC, MAX_HEADER_LEN, type DecodedItem } from "../src/guest-protocol/frame-codec.js";

function drain(decoder: FrameDecoder): DecodedItem[] {
  const items: DecodedItem[] = [];
  for (let item = decoder.next(); item; item = decoder.next()) items.push(item);
  return items;
}

const headerArb = fc.record({ id: fc.integer({ min: 1, max: 2 ** 31 }), op: fc.string(), text: fc.string({ unit: "binary" }) });

describe("frame codec", () => {
  it("round-trips frames however the byte stream is split", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(headerArb, fc.uint8Array({ maxLength: 2048 })), { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (frames, cuts) => {
          const wire = Buffer.concat(frames.map(([h, p]) => encodeFrame(h, Buffer.from(p))));
          const decoder = new FrameDecoder();
          const items: DecodedItem[] = [];
          let at = 0;
          for (const cut of [...cuts.map((c) => c % (wire.length + 1)).sort((a, b) => a - b), wire.length]) {
            decoder.push(wire.subarray(at, Math.max(at, cut)));
            at = Math.max(at, cut);
            items.push(...drain(decoder));
          }
          assert.equal(items.length, frames.length);
          items.forEach((item, i) => {
            assert.equal(item.kind, "frame");
            if (item.kind !== "frame") return;
            assert.deepEqual(item.header, { ...frames[i]![0] });
            assert.deepEqual([...item.payload], [...frames[i]![1]]);
          });
        },
      ),
    );
  });

  it("never throws on arbitrary bytes and always makes progress", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 512 }), { maxLength: 8 }), (chunks) => {
        const decoder = new FrameDecoder();
        for (const chunk of chunks) {
          decoder.push(Buffer.from(chunk));
          drain(decoder);
        }
        // Whatever stays buffered is at most an incomplete frame, never a stuck pile of garbage.
        assert.ok(decoder.bufferedBytes <= 512 * 8);
      }),
    );
  });

  it("resynchronises on the next valid frame after garbage, bad lengths and bad JSON", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), headerArb, (garbage, header) => {
        const badLength = Buffer.concat([FRAME_MAGIC, Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])]);
        const badJson = Buffer.concat([FRAME_MAGIC, Buffer.from([0, 0, 0, 3, 0, 0, 0, 0]), Buffer.from("{x}")]);
        const decoder = new FrameDecoder();
        decoder.push(Buffer.concat([Buffer.from(garbage), badLength, badJson, encodeFrame(header)]));
        const frames = drain(decoder).filter((i) => i.kind === "frame");
        assert.ok(frames.length >= 1);
        assert.deepEqual((frames.at(-1) as { header: unknown }).header, { ...header });
      }),
    );
  });

  it("rejects non-object headers as garbage", () => {
    const decoder = new FrameDecoder();
    const body = Buffer.from("[1,2]");
    decoder.push(Buffer.concat([FRAME_MAGIC, Buffer.from([0, 0, 0, body.length, 0, 0, 0, 0]), body]));
    assert.deepEqual(drain(decoder), [{ kind: "garbage", skipped: 12 + body.length, reason: "header is not a JSON object" }]);
  });

  it("refuses to encode oversized headers", () => {
    assert.throws(() => encodeFrame({ big: "x".repeat(MAX_HEADER_LEN) }), RangeError);
  });
});
