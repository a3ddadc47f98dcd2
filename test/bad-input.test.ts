import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "commander";
import fc from "fast-check";
import { damagedArgument } from "../src/cli/argv-encoding.js";
import { portNumber } from "../src/cli/parse-options.js";
import { isPyroError } from "../src/errors.js";
import { MAX_HEADER_LEN, MAX_PAYLOAD_LEN } from "../src/guest-protocol/frame-codec.js";
import { checkGuestRequest, isWellFormedText } from "../src/guest-protocol/request-limits.js";

describe("bad input is refused, never changed", () => {
  it("portNumber accepts exactly 1..65535 (0 where allowed) and refuses everything else", () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: -10, max: 100_000 }).map(String), fc.string({ maxLength: 8 })), fc.boolean(), (text, allowZero) => {
        const valid = /^\d{1,5}$/.test(text) && Number(text) >= (allowZero ? 0 : 1) && Number(text) <= 65535;
        if (valid) assert.equal(portNumber(text, { allowZero }), Number(text));
        else assert.throws(() => portNumber(text, { allowZero }), InvalidArgumentError);
      }),
      { numRuns: 300 },
    );
  });

  it("isWellFormedText agrees with a strict UTF-8 round trip", () => {
    fc.assert(
      fc.property(
        fc
          .array(
            fc.oneof(
              fc.constantFrom("\uD800", "\uDC00", "\uDBFF\uDFFF", "\uFFFD"),
              fc.integer({ min: 0, max: 0x10ffff }).map((cp) => String.fromCodePoint(cp)),
            ),
            { maxLength: 6 },
          )
          .map((parts) => parts.join("")),
        (text) => {
          assert.equal(isWellFormedText(text), Buffer.from(text, "utf8").toString("utf8") === text);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("damagedArgument refuses U+FFFD from undecodable bytes, passes a genuine U+FFFD and clean text", () => {
    const cmdline =
      (...args: Buffer[]) =>
      () =>
        Buffer.concat(args.flatMap((a) => [a, Buffer.from([0])]));
    assert.equal(
      damagedArgument(["run", "x"], () => assert.fail("no need to read the raw argv")),
      undefined,
    );
    assert.match(
      damagedArgument(["run", "caf\uFFFD"], cmdline(Buffer.from("run"), Buffer.from([0x63, 0x61, 0x66, 0xe9])))!,
      /argument 2 .* is not valid UTF-8/,
    );
    assert.equal(damagedArgument(["run", "caf\uFFFD"], cmdline(Buffer.from("run"), Buffer.from("caf\uFFFD"))), undefined);
    assert.match(damagedArgument(["caf\uFFFD"], () => undefined)!, /not valid UTF-8/, "no raw argv to prove it: refuse");
    assert.match(damagedArgument(["a\uD800"], cmdline(Buffer.from("a")))!, /not valid UTF-8/, "a lone surrogate is always damage");
  });

  it("checkGuestRequest refuses exactly what the frame codec cannot carry, with the limit", () => {
    const fits = { argv: ["sh", "-c", "a".repeat(MAX_HEADER_LEN - 100)] };
    checkGuestRequest("cmd", fits);
    const tooBig = { argv: ["sh", "-c", "a".repeat(MAX_HEADER_LEN)] };
    assert.throws(
      () => checkGuestRequest("the command", tooBig),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /the command takes \d+ bytes; .* at most 1048576 bytes/.test(e.message),
    );
    assert.throws(
      () => checkGuestRequest("data", {}, MAX_PAYLOAD_LEN + 1),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && e.message.includes(String(MAX_PAYLOAD_LEN)),
    );
    assert.throws(
      () => checkGuestRequest("the command", { env: { A: "x\uDC00" } }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /not valid Unicode/.test(e.message),
    );
  });
});
