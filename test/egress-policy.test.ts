import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { decideEgress, isPublicAddress, validateAllowEntry } from "../src/network/egress-policy.js";
import { wholeCharacters } from "../src/workspaces/workspace-shells.js";

describe("egress policy", () => {
  it("refuses loopback, private, link-local and metadata addresses by default", () => {
    for (const ip of [
      "127.0.0.1",
      "10.0.2.2",
      "172.20.1.1",
      "192.168.1.10",
      "169.254.169.254",
      "100.64.0.1",
      "::1",
      "fe80::1",
      "fd00::5",
      "::ffff:127.0.0.1",
      "0.0.0.0",
    ]) {
      assert.equal(isPublicAddress(ip), false, ip);
      assert.equal(decideEgress({ allow: [] }, "h", [ip]).allowed, false, ip);
    }
    for (const ip of ["151.101.2.132", "8.8.8.8", "2a04:4e42::644"]) assert.equal(isPublicAddress(ip), true, ip);
  });

  it("admits only allowlisted hosts and CIDRs when an allowlist is set", () => {
    const policy = { allow: ["pypi.org", "*.npmjs.org", "203.0.113.0/24"] };
    assert.deepEqual(decideEgress(policy, "pypi.org", ["151.101.0.223"]), { allowed: true, address: "151.101.0.223" });
    assert.equal(decideEgress(policy, "registry.npmjs.org", ["104.16.1.1"]).allowed, true);
    assert.equal(decideEgress(policy, "npmjs.org", ["104.16.1.1"]).allowed, false, "the wildcard needs a subdomain");
    assert.equal(decideEgress(policy, "evil.com", ["203.0.113.9"]).allowed, true, "by CIDR");
    assert.equal(decideEgress(policy, "evil.com", ["198.51.100.1"]).allowed, false);
    // An explicitly listed private address is reachable on purpose.
    assert.equal(decideEgress({ allow: ["10.1.2.3"] }, "db", ["10.1.2.3"]).allowed, true);
    assert.equal(decideEgress({ allow: [] }, "nowhere", []).allowed, false);
  });

  it("validates allowlist entries", () => {
    assert.equal(validateAllowEntry("PyPI.org"), "pypi.org");
    assert.equal(validateAllowEntry("10.0.0.0/8"), "10.0.0.0/8");
    for (const bad of ["not a host", "10.0.0.0/33", "http://x", "*.*.com", ""]) assert.throws(() => validateAllowEntry(bad), bad);
  });

  it("never allows a non-public address without listing it (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("127.0.0.1", "10.9.8.7", "192.168.0.1", "169.254.1.1", "::1"),
        fc.array(fc.constantFrom("pypi.org", "*.example.com", "8.8.8.0/24"), { maxLength: 3 }),
        (ip, allow) => {
          assert.equal(decideEgress({ allow }, "pypi.org", [ip]).allowed, false);
        },
      ),
    );
  });
});

describe("shell output cursors", () => {
  it("never splits a UTF-8 character", () => {
    const text = Buffer.from("aé€😀", "utf8");
    for (let n = 0; n <= text.length; n++) {
      const cut = wholeCharacters(text.subarray(0, n));
      assert.ok(cut <= n);
      assert.equal(Buffer.from(text.subarray(0, cut).toString("utf8"), "utf8").equals(text.subarray(0, cut)), true, `n=${n}`);
      assert.ok(n - cut < 4);
    }
  });
});
