import assert from "node:assert/strict";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { findExecutable } from "../src/process/host-command.js";
import { runSandboxed, sandboxFailure, type SandboxLimits } from "../src/process/host-sandbox.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

const LIMITS: SandboxLimits = { cpuSeconds: 5, addressSpaceBytes: 512 << 20, fileSizeBytes: 1 << 20 };
const sh = "/usr/bin/sh";

describe("host sandbox for tools that read guest-written data", { skip: findExecutable("bwrap") ? false : "needs bwrap (apt-get install bubblewrap)" }, () => {
  const dir = suiteTempDir("pyro-sandbox-");
  let out: string;
  let input: string;
  before(async () => {
    out = join(dir(), "out");
    await mkdir(out);
    input = join(dir(), "input.bin");
    await writeFile(input, "input bytes");
    await writeFile(join(dir(), "canary"), "unchanged");
  });
  const run = (script: string, extra: Partial<Parameters<typeof runSandboxed>[0]> = {}) =>
    runSandboxed({ tool: sh, args: ["-c", script], readOnlyFiles: [input], outputDir: out, timeoutMs: 10_000, limits: LIMITS, ...extra });

  it("sees only /usr, its input (read-only) and its output directory", async () => {
    const r = await run(
      `cat ${input}; echo; echo hi > ${input} 2>/dev/null && echo WROTE-INPUT; echo x > ${join(dir(), "canary")} 2>/dev/null; ls /; test -e /etc/passwd && echo HAS-ETC; echo made > /out/result; ls /home /root 2>/dev/null; true`,
    );
    assert.equal(r.exitCode, 0, r.stderr);
    const text = r.stdout.toString();
    assert.match(text, /^input bytes\n/);
    assert.doesNotMatch(text, /WROTE-INPUT|HAS-ETC/);
    assert.equal(await readFile(input, "utf8"), "input bytes");
    assert.equal(await readFile(join(dir(), "canary"), "utf8"), "unchanged");
    assert.equal(await readFile(join(out, "result"), "utf8"), "made\n");
    assert.deepEqual((await readdir(dir())).sort(), ["canary", "input.bin", "out"]);
  });

  it("has no network and no capabilities", async () => {
    const r = await run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; grep CapEff /proc/self/status");
    const lines = r.stdout.toString().trim().split("\n");
    assert.deepEqual(lines.slice(0, -1), ["lo"]);
    assert.match(lines.at(-1)!, /CapEff:\s+0+$/);
  });

  it("a hang is stopped at the deadline with a clear error", async () => {
    const started = Date.now();
    await assert.rejects(
      run("sleep 60", { timeoutMs: 1500 }),
      (e) => isPyroError(e, "HOST_COMMAND_FAILED") && /did not finish within 2 s/.test(e.message) && !e.message.includes("\n"),
    );
    assert.ok(Date.now() - started < 5000);
  });

  it("rlimits bound CPU, memory and file size; a crash is reported, not hidden", async () => {
    const cpu = await run("while :; do :; done", { limits: { ...LIMITS, cpuSeconds: 1 } });
    assert.ok(cpu.signal, `killed by a signal: ${JSON.stringify(cpu)}`);
    assert.match(sandboxFailure(cpu, "spinning").message, /spinning: the tool crashed \(SIG/);
    const big = await run("head -c 2000000 /dev/zero > /out/big");
    assert.notEqual(big.exitCode, 0);
    const segv = await run("kill -SEGV $$");
    assert.equal(segv.signal, "SIGSEGV");
    const mem = await run("python3 -c 'x = bytearray(800 << 20)' 2>&1 || echo FAILED");
    assert.match(mem.stdout.toString() + mem.stderr, /MemoryError|FAILED|not found/);
  });

  it("stops a tool that prints more than asked and keeps the head", async () => {
    const r = await run("yes abc", { maxStdoutBytes: 1000 });
    assert.equal(r.stdoutTruncated, true);
    assert.equal(r.stdout.length, 1000);
    assert.ok(r.stdout.toString().startsWith("abc\nabc\n"));
  });

  it("refuses an input that is not a plain file (a link pyro did not resolve)", async () => {
    const { symlink } = await import("node:fs/promises");
    await symlink("/etc/passwd", join(dir(), "link"));
    await assert.rejects(
      run("true", { readOnlyFiles: [join(dir(), "link")] }),
      (e) => isPyroError(e, "HOST_COMMAND_FAILED") && /not a regular file/.test(e.message),
    );
    await rm(join(dir(), "link"));
  });
});
