import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { decideEgress, isPublicAddress, parseHostPublicCidrs, validateAllowEntry } from "../src/network/egress-policy.js";
import { cidrContains, formatAddress, parseHostAddress } from "../src/network/ip-address.js";
import { parseAbsoluteTarget, parseConnectTarget } from "../src/network/proxy-target.js";

/**
 * Non-global ranges of the IANA special-purpose registries (and multicast, and IPv6 outside
 * 2000::/3), written out here as the expectation; ranges holding a globally reachable sub-range
 * (192.0.0.0/24, 2001::/23) appear as their non-global parts. IPv4-mapped addresses are decided
 * as the IPv4 they map (see the embeddings below).
 */
const NON_PUBLIC_V4 = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/29",
  "192.0.0.8/32",
  "192.0.0.170/31",
  "192.0.0.128/26",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "255.255.255.255/32",
];
const NON_PUBLIC_V6 = [
  "::/128",
  "::1/128",
  "::/96",
  "::ffff:0:0:0/96",
  "64:ff9b:1::/48",
  "100::/64",
  "100:0:0:1::/64",
  "2001:2::/48",
  "2001:10::/28",
  "2001:db8::/32",
  "2001:100::/24",
  "3fff::/20",
  "5f00::/16",
  "fc00::/7",
  "fe80::/10",
  "fec0::/10",
  "ff00::/8",
  "4000::/2",
  "c000::/3",
  "e000::/4",
];
/** Plainly public space: no special-purpose entry touches these. */
const PUBLIC_V4 = ["1.0.0.0/8", "8.0.0.0/7", "23.0.0.0/8", "104.16.0.0/12", "151.101.0.0/16", "185.0.0.0/8"];
const PUBLIC_V6 = ["2400::/12", "2600::/12", "2a00::/12", "2c0f:f000::/20"];

/** An address of `cidr` with random host bits. */
function inRange(cidr: string): fc.Arbitrary<Uint8Array> {
  const [base, bitsText] = cidr.split("/");
  const bytes = parseHostAddress(base!)!;
  const bits = Number(bitsText);
  return fc.uint8Array({ minLength: bytes.length, maxLength: bytes.length }).map((random) => {
    const out = Uint8Array.from(bytes);
    for (let i = 0; i < out.length * 8; i++) {
      if (i < bits) continue;
      const bit = (random[i >> 3]! >> (7 - (i & 7))) & 1;
      out[i >> 3] = (out[i >> 3]! & ~(1 << (7 - (i & 7)))) | (bit << (7 - (i & 7)));
    }
    return out;
  });
}

const anyOf = (cidrs: string[]) => fc.oneof(...cidrs.map(inRange));
const n32 = (b: Uint8Array) => ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
const hex16 = (b: Uint8Array, i: number) => ((b[i]! << 8) | b[i + 1]!).toString(16);

/** Every way a resolver or URL parser accepts to write this IPv4 address. */
function ipv4Spellings(b: Uint8Array): string[] {
  const [a, c, d, e] = Array.from(b) as [number, number, number, number];
  const oct = (n: number) => `0${n.toString(8)}`;
  return [
    `${a}.${c}.${d}.${e}`,
    `${a}.${c}.${d}.${e}.`,
    String(n32(b)),
    `0x${n32(b).toString(16)}`,
    `0X${n32(b).toString(16).toUpperCase()}`,
    `0${n32(b).toString(8)}`,
    [a, c, d, e].map(oct).join("."),
    [a, c, d, e].map((n) => `0x${n.toString(16)}`).join("."),
    `${a}.${c}.${(d << 8) | e}`,
    `${a}.${(c << 16) | (d << 8) | e}`,
    `0x${a.toString(16)}.${oct(c)}.${(d << 8) | e}`,
  ];
}

/** IPv6 text for 16 bytes: canonical, full with leading zeros, upper case, each zero run compressed, dotted tail. */
function ipv6Spellings(b: Uint8Array): string[] {
  const groups = Array.from({ length: 8 }, (_, i) => hex16(b, 2 * i));
  const out = [formatAddress(b), groups.map((g) => g.padStart(4, "0")).join(":"), formatAddress(b).toUpperCase(), groups.join(":")];
  out.push(`${groups.slice(0, 6).join(":")}:${b[12]}.${b[13]}.${b[14]}.${b[15]}`);
  for (let start = 0; start < 8; start++) {
    for (let end = start + 1; end <= 8; end++) {
      if (groups.slice(start, end).every((g) => g === "0")) out.push(`${groups.slice(0, start).join(":")}::${groups.slice(end).join(":")}`);
    }
  }
  return out;
}

/** IPv6 addresses that carry this IPv4 address as their destination. */
function embeddings(v4: Uint8Array): string[] {
  const hi = hex16(v4, 0);
  const lo = hex16(v4, 2);
  const inv = Uint8Array.from(v4, (x) => x ^ 0xff);
  return [
    `::ffff:${v4.join(".")}`,
    `::ffff:${hi}:${lo}`,
    `0:0:0:0:0:FFFF:${hi.toUpperCase()}:${lo}`,
    `0000::ffff:${hi.padStart(4, "0")}:${lo.padStart(4, "0")}`,
    `64:ff9b::${v4.join(".")}`,
    `64:ff9b::${hi}:${lo}`,
    `0064:FF9B:0000::${hi}:${lo}`,
    `2002:${hi}:${lo}::1`,
    `2002:${hi}:${lo}:1:2:3:4:5`,
    `2001:0:${hi}:${lo}::1`,
    `2001::${hex16(inv, 0)}:${hex16(inv, 2)}`,
    `2001:0:102:304:0:ffff:${hex16(inv, 0)}:${hex16(inv, 2)}`,
  ];
}

const RUNS = { numRuns: 150 };

describe("egress address classification (property)", () => {
  it("refuses every special-purpose IPv4 address, in every spelling and through every proxy door", () => {
    fc.assert(
      fc.property(anyOf(NON_PUBLIC_V4), (v4) => {
        for (const text of ipv4Spellings(v4)) {
          assert.deepEqual(parseHostAddress(text), v4, text);
          assert.equal(isPublicAddress(text), false, text);
          assert.equal(decideEgress({ allow: [] }, "h", [text]).allowed, false, text);
          const connect = parseConnectTarget(`${text}:443`);
          assert.equal(isPublicAddress(formatAddress(connect.address!)), false, `CONNECT ${text}`);
          const absolute = parseAbsoluteTarget(`http://${text}:8080/x`);
          assert.equal(isPublicAddress(formatAddress(absolute.address!)), false, `GET http://${text}/`);
        }
      }),
      RUNS,
    );
  });

  it("refuses every IPv6 form that carries a special-purpose IPv4 destination", () => {
    fc.assert(
      fc.property(anyOf(NON_PUBLIC_V4), (v4) => {
        for (const text of embeddings(v4)) {
          assert.equal(isPublicAddress(text), false, text);
          assert.equal(decideEgress({ allow: [] }, "h", [text]).allowed, false, text);
          assert.equal(decideEgress({ allow: [] }, "h", [`[${text}]`]).allowed, false, `[${text}]`);
          const target = parseConnectTarget(`[${text}]:443`);
          assert.equal(isPublicAddress(formatAddress(target.address!)), false, `CONNECT [${text}]`);
          const absolute = parseAbsoluteTarget(`http://[${text}]/`);
          assert.equal(isPublicAddress(formatAddress(absolute.address!)), false, `GET http://[${text}]/`);
        }
      }),
      RUNS,
    );
  });

  it("refuses every special-purpose IPv6 address in every spelling", () => {
    fc.assert(
      fc.property(anyOf(NON_PUBLIC_V6), (v6) => {
        for (const text of ipv6Spellings(v6)) {
          assert.deepEqual(parseHostAddress(text)?.length, 16, text);
          assert.equal(isPublicAddress(text), false, text);
          assert.equal(decideEgress({ allow: [] }, "h", [text]).allowed, false, text);
          const target = parseConnectTarget(`[${text}]:443`);
          assert.equal(isPublicAddress(formatAddress(target.address!)), false, `CONNECT [${text}]`);
        }
      }),
      RUNS,
    );
  });

  it("keeps public addresses public in every spelling, and connects to their canonical literal", () => {
    fc.assert(
      fc.property(anyOf(PUBLIC_V4), (v4) => {
        const dotted = v4.join(".");
        for (const text of [...ipv4Spellings(v4), `::ffff:${dotted}`, `64:ff9b::${dotted}`, `2002:${hex16(v4, 0)}:${hex16(v4, 2)}::1`]) {
          assert.equal(isPublicAddress(text), true, text);
        }
        for (const text of [...ipv4Spellings(v4), `::ffff:${dotted}`, `::FFFF:${hex16(v4, 0)}:${hex16(v4, 2)}`]) {
          assert.deepEqual(decideEgress({ allow: [] }, "h", [text]), { allowed: true, address: dotted }, text);
        }
      }),
      RUNS,
    );
    fc.assert(
      fc.property(anyOf(PUBLIC_V6), (v6) => {
        for (const text of ipv6Spellings(v6)) {
          assert.equal(isPublicAddress(text), true, text);
          assert.deepEqual(decideEgress({ allow: [] }, "h", [text]), { allowed: true, address: formatAddress(v6) }, text);
        }
      }),
      RUNS,
    );
  });

  it("never opens a non-public address through a name on the allowlist", () => {
    fc.assert(
      fc.property(
        fc.oneof(anyOf(NON_PUBLIC_V4), anyOf(NON_PUBLIC_V6)),
        fc.array(fc.constantFrom("pypi.org", "*.example.com", "8.8.8.0/24", "2a00::/12"), { maxLength: 3 }),
        (address, allow) => {
          assert.equal(decideEgress({ allow }, "pypi.org", [formatAddress(address)]).allowed, false);
        },
      ),
      RUNS,
    );
  });

  it("matches CIDRs bit by bit on canonical bytes", () => {
    fc.assert(
      fc.property(fc.oneof(inRange("0.0.0.0/0"), inRange("::/0")), fc.nat(), (address, n) => {
        const bits = n % (address.length * 8 + 1);
        const cidr = { bytes: address, bits };
        assert.equal(cidrContains(cidr, address), true);
        if (bits > 0) {
          const flipped = Uint8Array.from(address);
          flipped[(bits - 1) >> 3]! ^= 1 << (7 - ((bits - 1) & 7));
          assert.equal(cidrContains(cidr, flipped), false, `${formatAddress(flipped)} outside ${formatAddress(address)}/${bits}`);
        }
      }),
      RUNS,
    );
  });
});

describe("egress addresses (examples)", () => {
  it("classifies the spellings that reached the host's loopback before", () => {
    for (const text of [
      "::ffff:7f00:1",
      "[::ffff:7f00:1]",
      "::ffff:127.0.0.1",
      "2130706433",
      "0x7f000001",
      "0177.0.0.1",
      "127.1",
      "::7f00:1",
      "64:ff9b::7f00:1",
      "2002:7f00:1::1",
      "0:0:0:0:0:ffff:7f00:0001",
    ]) {
      assert.equal(isPublicAddress(text), false, text);
      assert.equal(decideEgress({ allow: [] }, "h", [text]).allowed, false, text);
    }
  });

  it("names why an address is refused", () => {
    const decision = decideEgress({ allow: [] }, "evil.test", ["::ffff:7f00:1"]);
    assert.equal(decision.allowed, false);
    assert.match(!decision.allowed ? decision.reason : "", /127\.0\.0\.1: loopback/);
    const nat64 = decideEgress({ allow: [] }, "x", ["64:ff9b::a9fe:a9fe"]);
    assert.match(!nat64.allowed ? nat64.reason : "", /NAT64.*169\.254\.169\.254 \(link-local\)/);
  });

  it("follows the most specific registry entry (globally reachable anycast inside a reserved block)", () => {
    assert.equal(isPublicAddress("192.0.0.9"), true);
    assert.equal(isPublicAddress("192.0.0.11"), false);
    assert.equal(isPublicAddress("2001:4:112::1"), true);
    assert.equal(isPublicAddress("2001:5::1"), false);
  });

  it("matches IPv6 CIDRs at bit precision, and IPv4-mapped destinations against IPv4 entries", () => {
    assert.equal(decideEgress({ allow: ["2001:db8::/33"] }, "h", ["2001:db8:8000::1"]).allowed, false, "bit 33 differs");
    assert.equal(decideEgress({ allow: ["2001:db8::/33"] }, "h", ["2001:db8:7fff::1"]).allowed, true);
    assert.deepEqual(decideEgress({ allow: ["10.1.0.0/16"] }, "db", ["::ffff:a01:203"]), { allowed: true, address: "10.1.2.3" });
    assert.equal(decideEgress({ allow: ["10.1.0.0/16"] }, "db", ["::ffff:a02:203"]).allowed, false);
  });

  it("stores allowlist addresses canonically and refuses shorthand IPv4", () => {
    assert.equal(validateAllowEntry("::FFFF:10.0.0.0/104"), "10.0.0.0/8");
    assert.equal(validateAllowEntry("2001:DB8:0:0::/32"), "2001:db8::/32");
    assert.equal(validateAllowEntry("::ffff:10.1.2.3"), "10.1.2.3");
    for (const bad of ["127.1", "2130706433", "0x7f000001", "10.0.0.0/8/1", "::1/129", "1.2.3.4/"]) assert.throws(() => validateAllowEntry(bad), bad);
  });

  it("treats ranges the host operator declared public as public, never the host's own addresses", () => {
    const hostPublic = parseHostPublicCidrs("203.0.113.0/24, 198.18.0.0/15");
    assert.deepEqual(hostPublic, ["203.0.113.0/24", "198.18.0.0/15"]);
    assert.deepEqual(decideEgress({ allow: [], hostPublic }, "deb.debian.org", ["203.0.113.80"]), { allowed: true, address: "203.0.113.80" });
    assert.equal(decideEgress({ allow: [] }, "deb.debian.org", ["203.0.113.80"]).allowed, false, "documentation space is not public by default");
    assert.equal(decideEgress({ allow: ["pypi.org"], hostPublic }, "evil.example", ["203.0.113.80"]).allowed, false, "public is not allowlisted");
    assert.equal(decideEgress({ allow: [], hostPublic }, "h", ["::ffff:127.0.0.1"]).allowed, false);
    for (const bad of ["127.0.0.0/8", "0.0.0.0/0", "126.0.0.0/7", "::/0", "::1/128", "203.0.113.1", "nonsense"])
      assert.throws(() => parseHostPublicCidrs(bad), bad);
  });
});
