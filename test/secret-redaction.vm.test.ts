import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Pyro } from "../src/sdk/pyro.js";
import { tarEntries } from "./helpers/tar-builder.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };
/** 20 ASCII characters. */
const TOKEN = "pyro-s3cr3t-Zq7Xw9Lk";
/** Multi-line, with a tab: a PTY prints it with CRLF, a terminal renders the tab as spaces. */
const MULTI = "first-line-Kp4Vb\nsecond\tline-Jm8Rt";
/** What the agent keeps of each stream at the default 1 MiB cap: 512 KiB of head, 512 KiB of tail. */
const HALF_CAP = 512 * 1024;

/** Every 8-character piece of the secrets, and of their runs between tabs and newlines, as they could show. */
function pieces(): string[] {
  const out = new Set<string>();
  for (const secret of [TOKEN, MULTI]) {
    for (const run of [secret, ...secret.split(/[\t\n]/)]) for (let i = 0; i + 8 <= run.length; i++) out.add(run.slice(i, i + 8));
  }
  return [...out].flatMap((p) => [p, p.replace(/\n/g, "\r\n")]);
}

function assertNoPiece(what: string, output: string | Buffer): void {
  const bytes = typeof output === "string" ? Buffer.from(output, "utf8") : output;
  for (const piece of pieces())
    assert.equal(bytes.includes(piece), false, `${what} shows ${JSON.stringify(piece)}: ${JSON.stringify(bytes.toString("utf8").slice(0, 300))}`);
}

describe("[vm] secret redaction: binary data, names, cuts, pages and terminal rendering", () => {
  let id: string;
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-redact-"));
    id = (await pyro.createWorkspace("debian:12", { secrets: { TOKEN, MULTI } })).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  it("binary files, file names and symlink targets: file read, file export and directory export", TIMEOUT, async () => {
    const made = await pyro.execWorkspace(
      id,
      [
        "sh",
        "-c",
        `mkdir -p out && printf '\\000\\001\\377%s\\000\\376' "$TOKEN" > out/blob.bin && touch "out/name-$TOKEN" && ln -s "target-$TOKEN" out/link && ls out | wc -l`,
      ],
      { secretEnv: ["TOKEN"] },
    );
    assert.equal(made.stdout.trim(), "3");
    const read = await pyro.readWorkspaceFile(id, "out/blob.bin");
    assert.equal(read.encoding, "base64");
    const bytes = Buffer.from(read.content, "base64");
    assertNoPiece("file read of a binary file", bytes);
    assert.ok(bytes.includes("[REDACTED]"), "the read shows where the secret was");
    await pyro.exportWorkspace(id, "out/blob.bin", join(scratch, "blob.bin"));
    assertNoPiece("file export of a binary file", await readFile(join(scratch, "blob.bin")));
    await pyro.exportWorkspace(id, "out", join(scratch, "out.tar"));
    const entries = await tarEntries(await readFile(join(scratch, "out.tar")));
    assert.equal(entries.filter((e) => e.path !== "./" && e.path !== ".").length, 3, JSON.stringify(entries.map((e) => e.path)));
    for (const e of entries) {
      assertNoPiece("exported entry name", e.path);
      if (e.linkpath !== undefined) assertNoPiece("exported symlink target", e.linkpath);
      assertNoPiece(`exported content of ${e.path}`, e.data);
    }
    assert.ok(entries.some((e) => e.linkpath === "target-[REDACTED]"));
  });

  it("file read --max-bytes cutting through a secret", TIMEOUT, async () => {
    await pyro.execWorkspace(id, ["sh", "-c", `printf 'hello %s bye' "$TOKEN" > cut.txt`], { secretEnv: ["TOKEN"] });
    const read = await pyro.readWorkspaceFile(id, "cut.txt", { maxBytes: "hello ".length + 10 });
    assertNoPiece("file read --max-bytes", read.content);
    assert.equal(read.content, "hello [REDACTED]");
    assert.equal(read.truncated, true);
  });

  it("exec output over the 1 MiB cap with a secret straddling each side of the agent's cut, and the command log", TIMEOUT, async () => {
    // 10 bytes of the first copy end the kept head; 13 bytes of the second begin the kept tail.
    const script = [
      `head -c ${HALF_CAP - 10} /dev/zero | tr '\\0' x`,
      `printf %s "$TOKEN"`,
      `head -c 1000 /dev/zero | tr '\\0' y`,
      `printf %s "$TOKEN"`,
      `head -c ${HALF_CAP - 13} /dev/zero | tr '\\0' z`,
    ].join("; ");
    const r = await pyro.execWorkspace(id, ["sh", "-c", script], { secretEnv: ["TOKEN"] });
    assert.equal(r.stdout_truncated, true);
    assertNoPiece("exec stdout", r.stdout);
    assert.ok(
      r.stdout.includes("x[REDACTED]\n[... ") && r.stdout.includes("output cap ...]\n[REDACTED]z"),
      "each fragment shows as [REDACTED] next to the cut",
    );
    assertNoPiece("command log", JSON.stringify(await pyro.logsWorkspace(id)));
    assertNoPiece("commands.jsonl", await readFile(join(testPaths.stateDir, "workspaces", id, "commands.jsonl")));
  });

  it("shell reads of a multi-line secret with a tab, raw and --plain, paged with small --max-chars", TIMEOUT, async () => {
    const shell = await pyro.openShell(id, { secretEnv: ["MULTI"], cols: 200 });
    await pyro.writeShell(id, shell.shell_id, `printf '%s\\n' "$MULTI"; echo DONE-$((40+2))`);
    let end = 0;
    let seen = "";
    const deadline = Date.now() + 60_000;
    while (!seen.includes("DONE-42\r\n")) {
      assert.ok(Date.now() < deadline, `timed out waiting for the shell; got ${JSON.stringify(seen)}`);
      const r = await pyro.readShell(id, shell.shell_id, { cursor: end, waitForIdleMs: 300 });
      seen += r.output;
      end = r.next_cursor;
    }
    assertNoPiece("shell read", seen);
    assert.match(seen, /\[REDACTED\]\r\nDONE-42/);
    for (const plain of [false, true]) {
      for (const maxChars of [16, 23]) {
        const pages: string[] = [];
        for (let cursor = 0; cursor < end; ) {
          const page = await pyro.readShell(id, shell.shell_id, { cursor, maxChars, plain });
          assert.equal(page.cursor, cursor);
          assert.ok(page.next_cursor > cursor, "paging moves forward");
          pages.push(page.output);
          cursor = page.next_cursor;
        }
        for (const page of pages) assertNoPiece(`shell page (${plain ? "plain" : "raw"}, ${maxChars} chars)`, page);
        assertNoPiece(`shell pages joined (${plain ? "plain" : "raw"}, ${maxChars} chars)`, pages.join(plain ? "\n" : ""));
      }
    }
    const whole = await pyro.readShell(id, shell.shell_id, { cursor: 0, plain: true });
    assert.match(whole.output, /\[REDACTED\]\nDONE-42/);
    assertNoPiece("plain shell read", whole.output);
    await pyro.closeShell(id, shell.shell_id);
  });
});
