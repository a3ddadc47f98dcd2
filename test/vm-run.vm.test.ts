import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 180_000 };

describe("[vm] pyro run: one command in a disposable microVM", () => {
  it("runs inside a real guest, not on the host", TIMEOUT, async () => {
    const r = await pyro.run("debian:12", ["sh", "-c", "git --version; uname -r; hostname; cat /proc/1/comm; test -d /workspace && echo has-workspace"]);
    assert.equal(r.exit_code, 0, r.stderr);
    assert.equal(r.execution_mode, "guest");
    assert.equal(r.backend, "qemu-microvm");
    assert.ok(r.accel === "kvm" || r.accel === "tcg");
    const [git, release, host, init, ws] = r.stdout.trim().split("\n");
    assert.match(git!, /^git version \d/);
    assert.match(release!, /cloud-amd64$/, "guest runs Debian's cloud kernel");
    // Each run is its own machine (a restored template would otherwise carry the template's name).
    assert.match(host!, /^pyro-[0-9a-f]{8}$/);
    assert.equal(init, "agent", "PID 1 is the pyro agent");
    assert.equal(ws, "has-workspace");
    assert.ok(r.boot_ms > 0 && r.total_ms >= r.boot_ms);
    assert.equal(r.warning, undefined);
  });

  it("mirrors non-zero exit codes and keeps stdout and stderr apart", TIMEOUT, async () => {
    const r = await pyro.run("debian:12", ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    assert.equal(r.exit_code, 3);
    assert.equal(r.stdout, "to-out\n");
    assert.equal(r.stderr, "to-err\n");
    assert.equal(r.timed_out, false);
  });

  it("kills a command at its timeout and says so", TIMEOUT, async () => {
    const started = Date.now();
    const r = await pyro.run("debian:12", ["sh", "-c", "echo started; sleep 60; echo never"], { timeoutSeconds: 1 });
    assert.equal(r.timed_out, true);
    assert.equal(r.exit_code, 124);
    assert.equal(r.stdout, "started\n");
    assert.match(r.warning ?? "", /timed out after 1 s/);
    assert.ok(r.duration_ms >= 1000 && r.duration_ms < 10_000, `duration ${r.duration_ms}`);
    assert.ok(Date.now() - started < 60_000);
  });

  it("caps huge output, keeping its head and tail and flagging the cut", TIMEOUT, async () => {
    const r = await pyro.run("debian:12", ["sh", "-c", "echo FIRST; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo LAST"], { maxOutputBytes: 100_000 });
    assert.equal(r.exit_code, 0);
    assert.equal(r.stdout_truncated, true);
    assert.ok(r.stdout.startsWith("FIRST\n"));
    assert.ok(r.stdout.endsWith("LAST\n"));
    assert.match(r.stdout, /\[\.\.\. \d+ bytes omitted by pyro's output cap \.\.\.\]/);
    assert.ok(r.stdout.length < 101_000, `kept ${r.stdout.length} chars`);
  });

  it("passes stdin, environment variables and the working directory", TIMEOUT, async () => {
    const r = await pyro.run("debian:12", ["sh", "-c", 'cat; echo "$GREETING"; pwd'], { stdin: "from-stdin\n", env: { GREETING: "hi there" }, cwd: "/tmp" });
    assert.equal(r.stdout, "from-stdin\nhi there\n/tmp\n");
  });

  it("reports a missing program as exit 127", TIMEOUT, async () => {
    const r = await pyro.run("debian:12", ["definitely-not-a-command"]);
    assert.equal(r.exit_code, 127);
    assert.match(r.stderr, /definitely-not-a-command: command not found/);
  });

  it("gives the guest no network unless asked, and working egress when asked", TIMEOUT, async () => {
    const off = await pyro.run("debian:12", ["ls", "/sys/class/net"]);
    assert.equal(off.stdout.trim(), "lo");
    const on = await pyro.run("debian:12", ["sh", "-c", "ls /sys/class/net | tr '\\n' ' '; cat /etc/resolv.conf"], { network: true });
    assert.match(on.stdout, /eth0/);
    assert.match(on.stdout, /nameserver 10\.0\.2\.3/);
    assert.equal(on.network, true);
  });

  it("rejects an unknown environment before booting anything", TIMEOUT, async () => {
    await assert.rejects(pyro.run("debian:99", ["true"]), (e) => isPyroError(e, "ENVIRONMENT_UNKNOWN") && /debian:12/.test(e.message));
  });

  it("rejects out-of-range resources with a clear message", TIMEOUT, async () => {
    await assert.rejects(pyro.run("debian:12", ["true"], { vcpuCount: 0 }), (e) => isPyroError(e, "INVALID_ARGUMENT") && /vcpu/.test(e.message));
    await assert.rejects(pyro.run("debian:12", []), (e) => isPyroError(e, "INVALID_ARGUMENT"));
  });
});
