import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { CLI } from "./helpers/vm-fixtures.js";

function pyro(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 170_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const TIMEOUT = { timeout: 180_000 };

describe("pyro CLI", () => {
  it("prints its version and help", () => {
    assert.match(pyro(["--version"]).stdout, /^\d+\.\d+\.\d+/);
    const help = pyro(["--help"]);
    assert.equal(help.code, 0);
    for (const cmd of ["run", "env", "doctor"]) assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`));
    assert.match(pyro(["run", "--help"]).stdout, /--allow-host-compat/);
  });

  it("rejects bad usage with exit code 2", () => {
    assert.equal(pyro(["run", "debian:12"]).code, 2);
    const bad = pyro(["run", "debian:12", "--vcpu-count", "lots", "--", "true"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /whole number/);
    assert.equal(pyro(["no-such-command"]).code, 2);
  });

  it("prints one clear line and exits 2 for a usage error a command finds itself", () => {
    for (const [args, message] of [
      [["workspace", "file", "write", "W", "x"], /^error: give exactly one of --text or --text-file$/m],
      [["workspace", "file", "write", "W", "x", "--text", "a", "--from-file", "b"], /^error: give exactly one of --text or --text-file$/m],
      [["workspace", "file", "write", "W", "x", "--text", "a", "--text-file", "b"], /^error: give exactly one of --text or --text-file$/m],
      [["workspace", "patch", "apply", "W"], /^error: give exactly one of --patch-file FILE or --patch FILE$/m],
      [["workspace", "patch", "apply", "W", "--patch", "a", "--patch-file", "b"], /^error: give exactly one of --patch-file FILE or --patch FILE$/m],
      [
        ["workspace", "service", "start", "W", "s", "--ready-file", "a", "--ready-tcp", "80", "--", "true"],
        /^error: give at most one of --ready-file, --ready-tcp, --ready-http, --ready-command$/m,
      ],
      [
        ["workspace", "service", "start", "W", "s", "--ready-timeout-seconds", "5", "--", "true"],
        /^error: --ready-timeout-seconds and --ready-interval-ms need a readiness check/m,
      ],
      [["mcp", "serve", "--token-file", "t"], /^error: --token-file applies to --http only/m],
      [["mcp", "serve", "--token", "t"], /^error: --token is not accepted: .*--token-file PATH/m],
      [["workspace", "create", "debian:12", "--id-only", "--json"], /^error: option '--id-only' cannot be used with option '--json'$/m],
    ] as const) {
      const r = pyro([...args]);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.stderr, message, args.join(" "));
      assert.doesNotMatch(r.stderr, /INTERNAL|\n\s+at /, "no internal error, no stack");
    }
  });

  it("rejects unknown options, excess arguments and out-of-range ports with exit 2", () => {
    for (const args of [
      ["workspace", "list", "--bogus"],
      ["workspace", "list", "extra"],
      ["env", "list", "--foo"],
      ["mcp", "serve", "--http", "127.0.0.1:99999"],
      ["workspace", "service", "start", "W", "s", "--publish", "70000:80", "--", "true"],
      ["workspace", "service", "start", "W", "s", "--ready-tcp", "localhost:http", "--", "true"],
      // Bounds from the domain's limits (src/runtime/guest-limits.ts, src/workspaces/workspace-limits.ts).
      ["run", "debian:12", "--timeout-seconds", "86401", "--", "true"],
      ["run", "debian:12", "--mem-mib", "255", "--", "true"],
      ["workspace", "exec", "W", "--timeout-seconds", "86401", "--", "true"],
      ["workspace", "create", "debian:12", "--vcpu-count", "17"],
      ["workspace", "service", "start", "W", "s", "--ready-file", "a", "--ready-timeout-seconds", "3601", "--", "true"],
    ]) {
      const r = pyro(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^error: /, args.join(" "));
    }
    assert.match(pyro(["mcp", "serve", "--http", "127.0.0.1:99999"]).stderr, /port must be a number from 0 to 65535/);
  });

  it("parses --secret-host scopes and refuses bad ones before booting anything", () => {
    const noEgress = pyro(["workspace", "create", "debian:12", "--secret", "API_KEY=v", "--secret-host", "API_KEY=api.example.com"]);
    assert.equal(noEgress.code, 125);
    assert.match(
      noEgress.stderr,
      /^pyro: error \[INVALID_ARGUMENT\]: scoped secrets \(--secret-host\) are sent by the egress proxy: create the workspace with --network-policy egress\n$/,
    );
    const undefinedName = pyro(["workspace", "create", "debian:12", "--network-policy", "egress", "--secret", "A=v", "--secret-host", "B=api.example.com"]);
    assert.match(undefinedName.stderr, /\[INVALID_ARGUMENT\]: --secret-host B: no secret 'B' is defined/);
    const cidr = pyro([
      "workspace",
      "create",
      "debian:12",
      "--network-policy",
      "egress",
      "--secret",
      "A=v",
      "--secret-host",
      "A=api.example.com",
      "--secret-host",
      "A=10.0.0.0/8",
    ]);
    assert.match(cidr.stderr, /\[INVALID_ARGUMENT\]: --secret-host A: '10\.0\.0\.0\/8' is a CIDR/, "a repeated NAME adds hosts, each validated");
    assert.equal(pyro(["workspace", "create", "debian:12", "--secret-host", "novalue"]).code, 2);
    assert.match(pyro(["workspace", "create", "--help"]).stdout, /--secret-host[\s\S]*--secret-memory-only[\s\S]*--inspect-tls/);
    const cleartextAlone = pyro(["workspace", "create", "debian:12", "--network-policy", "egress", "--secret", "A=v", "--secret-over-http"]);
    assert.match(cleartextAlone.stderr, /\[INVALID_ARGUMENT\]: --secret-over-http applies to scoped secrets/);
    assert.match(pyro(["workspace", "create", "--help"]).stdout, /--secret-over-http/);
  });

  it("names a host file it cannot read instead of failing internally", () => {
    const r = pyro(["workspace", "file", "write", "W", "x", "--from-file", "/nonexistent/pyro-input"]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /^pyro: error \[INVALID_ARGUMENT\]: cannot read --from-file \/nonexistent\/pyro-input: no such file\n$/);
  });

  it("refuses arguments that are not UTF-8 rather than changing them, and keeps a genuine U+FFFD", () => {
    // Node's argv is already decoded, so the raw bytes go in through a shell.
    const raw = spawnSync("/bin/sh", ["-c", 'exec "$0" "$1" run debian:99 -- echo "$(printf \'caf\\351\')"', process.execPath, CLI], { encoding: "utf8" });
    assert.equal(raw.status, 2, raw.stderr);
    assert.match(raw.stderr, /^error: argument 5 .* is not valid UTF-8 text/);
    const genuine = pyro(["run", "debian:99", "--", "echo", "caf\uFFFD"]);
    assert.match(genuine.stderr, /ENVIRONMENT_UNKNOWN/, "a real U+FFFD is passed on");
  });

  it("refuses, before booting anything, a command larger than the guest protocol carries", () => {
    const chunk = "a".repeat(100_000);
    // An unknown environment too: the size is checked first, and no version of this test boots a VM.
    const r = pyro(["run", "debian:99", "--", "echo", ...Array.from({ length: 11 }, () => chunk)]);
    assert.equal(r.code, 125);
    assert.match(
      r.stderr,
      /^pyro: error \[INVALID_ARGUMENT\]: the command with its arguments and environment takes \d+ bytes; a guest request carries at most 1048576 bytes/,
    );
  });

  it("reports pyro failures as one clear line and exit code 125", () => {
    const r = pyro(["run", "debian:99", "--", "true"]);
    assert.equal(r.code, 125);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /^pyro: error \[ENVIRONMENT_UNKNOWN\]: unknown environment 'debian:99'/);
    const json = pyro(["run", "debian:99", "--json", "--", "true"]);
    assert.equal(JSON.parse(json.stdout).error.code, "ENVIRONMENT_UNKNOWN");
  });

  it("lists and inspects environments as text and JSON", () => {
    const list = pyro(["env", "list"]);
    assert.match(list.stdout, /^debian:12 \[installed\]/m);
    assert.match(list.stdout, /^debian:12-build \[/m);
    const json = JSON.parse(pyro(["env", "list", "--json"]).stdout) as { environments: { name: string }[] };
    assert.deepEqual(
      json.environments.map((e) => e.name),
      ["debian:12", "debian:12-base", "debian:12-build"],
    );
    const inspect = JSON.parse(pyro(["env", "inspect", "debian:12", "--json"]).stdout);
    assert.equal(inspect.installed, true);
    assert.ok(inspect.packages.includes("git"));
    assert.equal(pyro(["env", "inspect", "nope"]).code, 125);
  });

  it("[vm] doctor passes on a prepared host and names the accelerator", TIMEOUT, () => {
    const r = pyro(["doctor", "--json"]);
    assert.equal(r.code, 0, r.stdout);
    const report = JSON.parse(r.stdout);
    assert.equal(report.runtime, "PASS");
    assert.ok(["kvm", "tcg"].includes(report.accel));
    assert.equal(typeof report.kvm.usable, "boolean");
    assert.deepEqual(report.problems, []);
    assert.match(pyro(["doctor"]).stdout, /^Runtime: PASS$/m);
  });

  it("[vm] run mirrors the guest's exit code and streams its output", TIMEOUT, () => {
    const r = pyro(["run", "debian:12", "--", "sh", "-c", "echo guest-out; echo guest-err >&2; exit 5"]);
    assert.equal(r.code, 5);
    assert.equal(r.stdout, "guest-out\n");
    assert.match(r.stderr, /^guest-err$/m);
    assert.match(r.stderr, /\[run\] environment=debian:12 execution_mode=guest .* exit_code=5/);
  });

  it("[vm] run --json prints the structured result", TIMEOUT, () => {
    const r = pyro(["run", "debian:12", "--json", "--mem-mib", "512", "--", "git", "--version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "no progress noise in JSON mode");
    const result = JSON.parse(r.stdout);
    for (const key of ["exit_code", "stdout", "stderr", "duration_ms", "backend", "accel", "boot_ms"]) assert.ok(key in result, key);
    assert.match(result.stdout, /^git version/);
    assert.equal(result.mem_mib, 512);
  });

  it("prints env list/inspect JSON with snake_case keys, like every other result", () => {
    const keysOf = (value: unknown): string[] =>
      Array.isArray(value) ? value.flatMap(keysOf) : value && typeof value === "object" ? Object.entries(value).flatMap(([k, v]) => [k, ...keysOf(v)]) : [];
    const list = pyro(["env", "list", "--json"]);
    assert.equal(list.code, 0, list.stderr);
    const inspect = pyro(["env", "inspect", "debian:12", "--json"]);
    assert.equal(inspect.code, 0, inspect.stderr);
    const parsed = JSON.parse(inspect.stdout) as Record<string, unknown>;
    assert.equal(parsed.installed, true, "the shared cache holds debian:12");
    assert.ok(typeof parsed.image_path === "string" && typeof parsed.disk_usage_bytes === "number" && typeof parsed.built_at === "string");
    for (const key of [...keysOf(JSON.parse(list.stdout)), ...keysOf(parsed)]) assert.match(key, /^[a-z0-9_]+$/);
  });
});
