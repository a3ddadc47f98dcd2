import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { PLACEHOLDER_PATTERN, SecretScopeRefusal, Substitution, substituteHeaders, type ScopedSecretRule } from "../src/network/secret-substitution.js";
import { parseSecretHosts, planSecrets } from "../src/workspaces/scoped-secrets.js";

const hex40 = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((a) => Buffer.from(a).toString("hex"));
const valueArb = fc.string({ minLength: 1, maxLength: 40 }).filter((v) => !v.includes("pyro-secret-"));
const noiseArb = fc.oneof(
  fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a)),
  fc.constantFrom(Buffer.from("pyro-secret-"), Buffer.from("pyro-secret-ab"), Buffer.from("pyro-")),
);

async function streamThrough(substitution: Substitution, input: Buffer, cuts: number[]): Promise<Buffer> {
  const points = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...points, input.length]) {
    if (p > from) chunks.push(input.subarray(from, p));
    from = Math.max(from, p);
  }
  const out: Buffer[] = [];
  for await (const chunk of Readable.from(chunks).pipe(substitution.stream())) out.push(chunk as Buffer);
  return Buffer.concat(out);
}

describe("placeholder substitution", () => {
  it("streams to the same bytes as a whole-buffer substitution, wherever the chunks are cut", async () => {
    await fc.assert(
      fc.asyncProperty(
        hex40,
        valueArb,
        fc.array(fc.tuple(noiseArb, fc.boolean()), { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        async (id, value, pieces, cuts) => {
          const placeholder = `pyro-secret-${id}`;
          const rules: ScopedSecretRule[] = [{ name: "K", placeholder, value, hosts: ["api.example.com"] }];
          const input = Buffer.concat(pieces.flatMap(([noise, withPlaceholder]) => (withPlaceholder ? [noise, Buffer.from(placeholder)] : [noise])));
          const expected = Buffer.from(input.toString("latin1").split(placeholder).join("\u0000SPLIT\u0000"), "latin1");
          const whole = Substitution.forRequest(rules, "api.example.com", { tls: true }).apply(input, true).out;
          const streamed = await streamThrough(Substitution.forRequest(rules, "api.example.com", { tls: true }), input, cuts);
          assert.deepEqual(streamed, whole);
          // Every placeholder became the value; nothing else changed.
          assert.deepEqual(
            whole,
            Buffer.concat(
              expected
                .toString("latin1")
                .split("\u0000SPLIT\u0000")
                .flatMap((part, i) => (i ? [Buffer.from(value), Buffer.from(part, "latin1")] : [Buffer.from(part, "latin1")])),
            ),
          );
        },
      ),
      { numRuns: 150 },
    );
  });

  it("refuses a placeholder bound elsewhere wherever it is cut, and the refusal never names the value", async () => {
    await fc.assert(
      // Realistic credential values: a short or common word would be "found" in any English message.
      fc.asyncProperty(
        hex40,
        fc.uint8Array({ minLength: 8, maxLength: 24 }).map((v) => `sk-${Buffer.from(v).toString("base64url")}`),
        noiseArb,
        noiseArb,
        fc.array(fc.nat(), { maxLength: 8 }),
        async (id, value, a, b, cuts) => {
          const placeholder = `pyro-secret-${id}`;
          const rules: ScopedSecretRule[] = [{ name: "K", placeholder, value, hosts: ["api.example.com", "*.api.example.com"] }];
          const input = Buffer.concat([a, Buffer.from(placeholder), b]);
          const refusal = await streamThrough(Substitution.forRequest(rules, "evil.example.net", { tls: true }), input, cuts).then(
            () => undefined,
            (e: unknown) => e,
          );
          assert.ok(refusal instanceof SecretScopeRefusal);
          assert.ok(!refusal.message.includes(value));
          assert.throws(
            () => substituteHeaders(["X-A", `x ${placeholder}`], Substitution.forRequest(rules, "api.example.com.evil.net", { tls: true })),
            SecretScopeRefusal,
          );
        },
      ),
      { numRuns: 100 },
    );
  });

  it("never writes a value into a cleartext request unless the workspace opted in, wherever the placeholder is cut", async () => {
    await fc.assert(
      fc.asyncProperty(
        hex40,
        fc.uint8Array({ minLength: 8, maxLength: 24 }).map((v) => `sk-${Buffer.from(v).toString("base64url")}`),
        noiseArb,
        fc.array(fc.nat(), { maxLength: 8 }),
        async (id, value, noise, cuts) => {
          const placeholder = `pyro-secret-${id}`;
          const rules: ScopedSecretRule[] = [{ name: "K", placeholder, value, hosts: ["api.example.com"] }];
          const input = Buffer.concat([noise, Buffer.from(placeholder), noise]);
          const refusal = await streamThrough(Substitution.forRequest(rules, "api.example.com", { tls: false }), input, cuts).then(
            () => undefined,
            (e: unknown) => e,
          );
          assert.ok(refusal instanceof SecretScopeRefusal && refusal.reason === "cleartext", String(refusal));
          assert.ok(!refusal.message.includes(value));
          assert.throws(
            () =>
              substituteHeaders(
                ["Authorization", `Basic ${Buffer.from(`u:${placeholder}`).toString("base64")}`],
                Substitution.forRequest(rules, "api.example.com", { tls: false }),
              ),
            SecretScopeRefusal,
          );
          const optedIn = await streamThrough(Substitution.forRequest(rules, "api.example.com", { tls: false, cleartextAllowed: true }), input, cuts);
          assert.ok(optedIn.includes(Buffer.from(value)));
          // The opt-in widens transport, never scope.
          await assert.rejects(
            streamThrough(Substitution.forRequest(rules, "evil.example.net", { tls: false, cleartextAllowed: true }), input, cuts),
            (e) => e instanceof SecretScopeRefusal && e.reason === "out-of-scope",
          );
        },
      ),
      { numRuns: 60 },
    );
  });

  it("turns an echoed value back into the placeholder in responses, across chunk cuts", async () => {
    await fc.assert(
      fc.asyncProperty(hex40, fc.string({ minLength: 4, maxLength: 40 }), noiseArb, fc.array(fc.nat(), { maxLength: 8 }), async (id, value, noise, cuts) => {
        fc.pre(!noise.includes(Buffer.from(value)) && !value.includes("pyro-secret-"));
        const placeholder = `pyro-secret-${id}`;
        const rules: ScopedSecretRule[] = [{ name: "K", placeholder, value, hosts: ["a.test"] }];
        const out = await streamThrough(Substitution.forResponse(rules, "a.test"), Buffer.concat([noise, Buffer.from(value), noise]), cuts);
        assert.ok(!out.includes(Buffer.from(value)) || Buffer.from(placeholder).includes(Buffer.from(value)));
        assert.ok(out.includes(Buffer.from(placeholder)));
      }),
      { numRuns: 100 },
    );
  });

  it("finds a placeholder inside Basic credentials and re-encodes them", () => {
    const rules: ScopedSecretRule[] = [{ name: "T", placeholder: `pyro-secret-${"0".repeat(40)}`, value: "tok", hosts: ["git.test"] }];
    const raw = ["Authorization", `Basic ${Buffer.from(`u:${rules[0]!.placeholder}`).toString("base64")}`];
    const [, header] = substituteHeaders(raw, Substitution.forRequest(rules, "git.test", { tls: true }));
    assert.equal(Buffer.from(header!.slice(6), "base64").toString(), "u:tok");
  });
});

describe("secret scopes (--secret-host)", () => {
  it("accepts host names, wildcards and IPs, comma-separated or repeated, and rejects anything else with INVALID_ARGUMENT", () => {
    assert.deepEqual(parseSecretHosts({ A: "api.example.com, *.example.org", B: ["127.0.0.1", "Api.Example.com"] }), {
      A: ["api.example.com", "*.example.org"],
      B: ["127.0.0.1", "api.example.com"],
    });
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (spec) => {
        try {
          const hosts = parseSecretHosts({ K: spec }).K!;
          assert.ok(hosts.length > 0);
          for (const h of hosts) assert.match(h, /^(\*\.)?[a-z0-9.:-]+$/, `'${h}' from '${spec}'`);
          assert.ok(hosts.every((h) => !h.includes("/") && !h.includes(",")));
        } catch (error) {
          assert.ok(isPyroError(error, "INVALID_ARGUMENT"), String(error));
          assert.ok(!String((error as Error).message).includes("\n"));
        }
      }),
      { numRuns: 300 },
    );
    for (const bad of ["", "a,,b", "10.0.0.0/8", "not a host", "127.1"])
      assert.throws(
        () => parseSecretHosts({ K: bad }),
        (e) => isPyroError(e, "INVALID_ARGUMENT"),
        bad,
      );
  });

  it("splits injected from scoped secrets, with fresh unique placeholders, and needs egress for scopes", () => {
    const a = planSecrets({ DB: "pw", KEY: "v" }, { KEY: ["api.test"] }, "egress");
    const b = planSecrets({ DB: "pw", KEY: "v" }, { KEY: ["api.test"] }, "egress");
    assert.deepEqual(a.injected, { DB: "pw" });
    assert.equal(a.scoped.length, 1);
    assert.match(a.scoped[0]!.placeholder, PLACEHOLDER_PATTERN);
    assert.notEqual(a.scoped[0]!.placeholder, b.scoped[0]!.placeholder);
    assert.throws(
      () => planSecrets({ KEY: "v" }, { KEY: ["api.test"] }, "off"),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /network-policy egress/.test(e.message),
    );
    assert.throws(
      () => planSecrets({}, { NOPE: ["api.test"] }, "egress"),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /no secret 'NOPE'/.test(e.message),
    );
  });
});
