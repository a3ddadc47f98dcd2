import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { fileReadView } from "../src/workspaces/file-read-view.js";
import { MIN_CUT_FRAGMENT_BYTES, REDACTED, Redactor } from "../src/workspaces/secret-redaction.js";
import { commandLogEntry, type WorkspaceExecResult } from "../src/workspaces/workspace-exec.js";
import { shellPage } from "../src/workspaces/workspace-shells.js";
import { diffTrees, redactTar } from "../src/workspaces/workspace-tree.js";
import { packTar, tarEntries } from "./helpers/tar-builder.js";

/** Secrets as users define them: ASCII, multi-line, with tabs, non-ASCII UTF-8; at least 8 characters. */
const secretArb = fc
  .array(
    fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)) },
      { weight: 1, arbitrary: fc.constantFrom("\n", "\t", " ") },
      { weight: 2, arbitrary: fc.constantFrom("é", "ß", "Ж", "日", "本", "🔑", "ω") },
    ),
    { minLength: 8, maxLength: 24 },
  )
  .map((chars) => chars.join(""));

/** Bytes around a secret: binary, or text of the same kind as secrets. */
const noiseArb = fc.oneof(
  fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.from(a)),
  fc.string({ maxLength: 120 }).map((s) => Buffer.from(s, "utf8")),
);

/** The forms a secret takes in output that pyro must catch: UTF-8, after a PTY's onlcr, UTF-16LE. */
const formArb = fc.constantFrom(
  (s: string) => Buffer.from(s, "utf8"),
  (s: string) => Buffer.from(s.replace(/\n/g, "\r\n"), "utf8"),
  (s: string) => Buffer.from(s, "utf16le"),
);

/** A stream holding the secret 1–3 times, in random forms, between random bytes. */
const streamArb = secretArb.chain((secret) =>
  fc.array(fc.tuple(noiseArb, formArb), { minLength: 1, maxLength: 3 }).chain((parts) =>
    noiseArb.map((last) => ({
      secret,
      data: Buffer.concat([...parts.flatMap(([noise, form]) => [noise, form(secret)]), last]),
    })),
  ),
);

/** Every piece of 8 characters of the secret, in the byte forms it could survive in. */
function forbiddenPieces(secret: string): Buffer[] {
  const chars = Array.from(secret);
  const pieces = new Set<string>();
  for (let i = 0; i + 8 <= chars.length; i++) pieces.add(chars.slice(i, i + 8).join(""));
  // What a terminal shows of a secret with tabs or newlines: the runs between them.
  for (const run of secret.split(/[\t\n]/)) {
    const runChars = Array.from(run);
    for (let i = 0; i + 8 <= runChars.length; i++) pieces.add(runChars.slice(i, i + 8).join(""));
  }
  return [...pieces].flatMap((p) => [Buffer.from(p, "utf8"), Buffer.from(p.replace(/\n/g, "\r\n"), "utf8"), Buffer.from(p, "utf16le")]);
}

function assertNoPiece(what: string, output: Buffer | string, secret: string): void {
  const bytes = typeof output === "string" ? Buffer.from(output, "utf8") : output;
  for (const piece of forbiddenPieces(secret)) {
    assert.equal(
      bytes.includes(piece),
      false,
      `${what} shows ${JSON.stringify(piece.toString("utf8"))} of the secret ${JSON.stringify(secret)}: ${JSON.stringify(bytes.toString("utf8"))}`,
    );
  }
}

/** What the agent's Capture (guest/agent/src/capture.rs) keeps of a stream: head and tail halves of the cap. */
function agentCapture(data: Buffer, cap: number) {
  if (data.length <= cap) return { bytes: data, headLength: data.length, totalBytes: data.length };
  const headCap = Math.floor(cap / 2);
  const tail = data.subarray(data.length - (cap - headCap));
  return { bytes: Buffer.concat([data.subarray(0, headCap), tail]), headLength: headCap, totalBytes: data.length };
}

/** Pages through a stream the way readShell does, the agent's side simulated from the whole stream. */
async function pageThrough(
  redactor: Redactor,
  stream: Buffer,
  options: { start: number; maxChars: number; contextLost: boolean; running: boolean; plain: boolean },
) {
  const pages: string[] = [];
  let cursor = options.start;
  for (let guard = 0; cursor < stream.length; guard++) {
    assert.ok(guard < stream.length + 10, "paging makes progress");
    const beforeStart = options.contextLost && cursor === options.start ? cursor : Math.max(0, cursor - redactor.contextBytes);
    const page = await shellPage(
      {
        cursor,
        bytes: stream.subarray(cursor, cursor + options.maxChars + redactor.contextBytes),
        before: stream.subarray(beforeStart, cursor),
        endCursor: stream.length,
        running: options.running,
      },
      options.maxChars,
      { plain: options.plain, cols: 80 },
      redactor,
    );
    assert.equal(page.cursor, cursor);
    if (page.next_cursor <= cursor) {
      // Only an incomplete UTF-8 character (at the stream's end, or wider than the page) waits for more.
      assert.ok(options.maxChars < 4 || stream.length - cursor < 4, `page at ${cursor} made no progress`);
      break;
    }
    pages.push(page.output);
    cursor = page.next_cursor;
    assert.equal(page.more, cursor < stream.length);
  }
  return pages;
}

function execResult(stdout: string): WorkspaceExecResult {
  return {
    workspace_id: "w",
    sequence: 1,
    command: ["x"],
    cwd: "/workspace",
    exit_code: 0,
    stdout,
    stderr: "",
    duration_ms: 1,
    timed_out: false,
    stdout_truncated: false,
    stderr_truncated: false,
    execution_mode: "guest",
  };
}

describe("secret redaction (property tests over every host-side cut)", () => {
  it("whole buffers, text or binary, in any form the secret takes", () => {
    fc.assert(
      fc.property(streamArb, ({ secret, data }) => {
        const redactor = new Redactor({ S: secret });
        const out = redactor.bytes(data);
        assertNoPiece("bytes()", out, secret);
        assert.ok(out.includes(REDACTED));
        const text = data.toString("utf8");
        if (Buffer.from(text, "utf8").equals(data)) assertNoPiece("text()", redactor.text(text), secret);
      }),
      { numRuns: 300 },
    );
  });

  it("file read and disk read with --max-bytes cutting anywhere (the read fetches context past the cut)", () => {
    fc.assert(
      fc.property(streamArb, fc.nat(), ({ secret, data }, cutSeed) => {
        const redactor = new Redactor({ S: secret });
        const maxBytes = 1 + (cutSeed % data.length);
        for (const head of [data.subarray(0, maxBytes + redactor.contextBytes), data]) {
          const view = fileReadView(head, data.length, maxBytes, redactor);
          const shown = Buffer.from(view.content, view.encoding);
          assertNoPiece(`file read (--max-bytes ${maxBytes})`, shown, secret);
          assert.equal(view.size, data.length);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("file export streamed in pieces of any size: a secret across a piece boundary is replaced whole", () => {
    fc.assert(
      fc.property(streamArb, fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 12 }), ({ secret, data }, sizes) => {
        const redactor = new Redactor({ S: secret });
        const stream = redactor.stream();
        const out: Buffer[] = [];
        for (let at = 0, i = 0; at < data.length; i++) {
          const size = sizes[i % sizes.length]!;
          out.push(stream.push(data.subarray(at, at + size)));
          at += size;
        }
        out.push(stream.end());
        const exported = Buffer.concat(out);
        assertNoPiece("streamed export", exported, secret);
        // Without a secret in it, the stream comes through byte for byte.
        if (!redactor.bytes(data).includes(REDACTED)) assert.deepEqual(exported, data);
      }),
      { numRuns: 300 },
    );
  });

  it("exec output cut by the agent's cap (head + tail), then the command log's tail", () => {
    fc.assert(
      fc.property(streamArb, fc.nat(), ({ secret, data }, capSeed) => {
        const redactor = new Redactor({ S: secret });
        const cap = 2 + (capSeed % (data.length + 4));
        const stdout = redactor.capturedText(agentCapture(data, cap));
        assertNoPiece(`exec stdout (cap ${cap})`, stdout, secret);
        assertNoPiece("command log", JSON.stringify(redactor.deep(commandLogEntry(execResult(stdout), "t"))), secret);
        // The log keeps 4096 chars: a long output puts its cut anywhere in the secret.
        const long = redactor.capturedText(agentCapture(Buffer.concat([Buffer.alloc(4096 - (capSeed % 64), "x"), data]), 1 << 20));
        assertNoPiece("command log tail", commandLogEntry(execResult(long), "t").stdout, secret);
      }),
      { numRuns: 300 },
    );
  });

  it("fragments at a cut whose other side pyro never sees: at most MIN_CUT_FRAGMENT_BYTES - 1 bytes survive", () => {
    fc.assert(
      fc.property(secretArb, noiseArb, fc.nat(), (secret, noise, seed) => {
        const redactor = new Redactor({ S: secret });
        const bytes = Buffer.from(secret, "utf8");
        const k = MIN_CUT_FRAGMENT_BYTES + (seed % (bytes.length - MIN_CUT_FRAGMENT_BYTES));
        const head = Buffer.concat([noise, bytes.subarray(0, k)]);
        const tail = Buffer.concat([bytes.subarray(bytes.length - k), noise]);
        assert.equal(redactor.bytes(head, { cutAfter: true }).includes(bytes.subarray(0, MIN_CUT_FRAGMENT_BYTES)), false);
        assert.equal(redactor.bytes(tail, { cutBefore: true }).includes(bytes.subarray(bytes.length - MIN_CUT_FRAGMENT_BYTES)), false);
      }),
      { numRuns: 300 },
    );
  });

  it("shell pages of any size, raw and plain, from cursor 0 or any cursor, with or without the bytes before it", async () => {
    await fc.assert(
      fc.asyncProperty(
        streamArb,
        fc.integer({ min: 1, max: 64 }),
        fc.nat(),
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        async ({ secret, data }, maxChars, startSeed, contextLost, running, plain) => {
          const redactor = new Redactor({ S: secret });
          const start = startSeed % data.length;
          const pages = await pageThrough(redactor, data, { start, maxChars, contextLost, running, plain });
          for (const page of pages) assertNoPiece(`shell page (max ${maxChars}, ${plain ? "plain" : "raw"})`, page, secret);
          assertNoPiece("shell pages joined", pages.join(""), secret);
          if (plain) assertNoPiece("shell pages joined, rendered", pages.join("\n"), secret);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("paging a stream without secrets returns it unchanged, page by page", async () => {
    await fc.assert(
      fc.asyncProperty(secretArb, fc.string({ maxLength: 200 }), fc.integer({ min: 4, max: 64 }), fc.boolean(), async (secret, text, maxChars, running) => {
        const stream = Buffer.from(text, "utf8");
        fc.pre(!stream.includes(Buffer.from(secret, "utf8")));
        const pages = await pageThrough(new Redactor({ S: secret }), stream, { start: 0, maxChars, contextLost: false, running, plain: false });
        assert.equal(pages.join(""), text);
      }),
      { numRuns: 100 },
    );
  });

  it("a shell still printing a secret: its start is left for the next page, which shows it redacted whole", async () => {
    const redactor = new Redactor({ S: "pyro-test-secret-9f8e7d" });
    const chunk = (text: string, cursor: number) => {
      const all = Buffer.from(text);
      return { cursor, bytes: all.subarray(cursor), before: all.subarray(0, cursor), endCursor: all.length, running: true };
    };
    const first = await shellPage(chunk("hello pyro-te", 0), 100, { plain: false, cols: 80 }, redactor);
    assert.deepEqual([first.output, first.next_cursor], ["hello ", 6]);
    const second = await shellPage(chunk("hello pyro-test-secret-9f8e7d done", 6), 100, { plain: false, cols: 80 }, redactor);
    assert.deepEqual([second.output, second.next_cursor], ["[REDACTED] done", 34]);
    // Nothing before it on the page: redacted rather than holding the reader back.
    const alone = await shellPage(chunk("hello pyro-te", 6), 100, { plain: false, cols: 80 }, redactor);
    assert.deepEqual([alone.output, alone.next_cursor], ["[REDACTED]", 13]);
  });

  it("directory exports: file contents (binary too), entry names and symlink targets", async () => {
    await fc.assert(
      fc.asyncProperty(streamArb, fc.string({ minLength: 1, maxLength: 8, unit: fc.constantFrom("a", "b", "-", ".", "_") }), async ({ secret, data }, stem) => {
        const redactor = new Redactor({ S: secret });
        const name = `${stem}${secret}`;
        // Names a filesystem can hold: no empty, "." or ".." components, no trailing "/".
        fc.pre(!/\/\/|\/$|(^|\/)\.{1,2}(\/|$)/.test(name));
        const tar = await packTar([
          { path: "dir/", type: "Directory" },
          { path: `dir/${name}`, type: "File", data },
          { path: "dir/link", type: "SymbolicLink", linkpath: `../${name}` },
          { path: "dir/plain.bin", type: "File", data },
        ]);
        const entries = await tarEntries(await redactTar(tar, redactor));
        assert.equal(entries.length, 4);
        for (const e of entries) {
          assertNoPiece("exported name", e.path, secret);
          if (e.linkpath !== undefined) assertNoPiece("exported symlink target", e.linkpath, secret);
          assertNoPiece(`exported content of ${e.path}`, e.data, secret);
        }
      }),
      { numRuns: 60 },
    );
  });

  it("diffs: the patch's line prefixes never split a multi-line secret into surviving pieces", async () => {
    await fc.assert(
      fc.asyncProperty(secretArb, fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), async (secret, before, after) => {
        const redactor = new Redactor({ S: secret });
        const name = `f-${secret}`;
        fc.pre(!/\/\/|\/$|(^|\/)\.{1,2}(\/|$)/.test(name));
        const content = (s: string) => Buffer.from(s, "utf8");
        const baseline = await packTar([{ path: "a.txt", type: "File", data: content(`${before}\nkeep\n`) }]);
        const current = await packTar([
          { path: "a.txt", type: "File", data: content(`${before}\n${secret}\nkeep\n${after}`) },
          { path: name, type: "File", data: content(`x\n${secret}\n`) },
          { path: "l", type: "SymbolicLink", linkpath: secret },
        ]);
        const diff = await diffTrees(baseline, current, redactor);
        assert.ok(diff.changed);
        assertNoPiece("diff", JSON.stringify(diff), secret);
        // What a reader sees once the "+" prefixes are gone.
        assertNoPiece(
          "diff, prefixes stripped",
          diff.patch
            .split("\n")
            .map((l) => l.slice(1))
            .join("\n"),
          secret,
        );
      }),
      { numRuns: 60 },
    );
  });

  it("a periodic secret repeated in overlapping copies is covered whole, in linear time", () => {
    const redactor = new Redactor({ S: "abcdefghXabcdefgh" });
    assert.equal(redactor.text("abcdefghXabcdefghXabcdefgh"), REDACTED);
    const started = Date.now();
    const big = new Redactor({ S: "a".repeat(60_000) }).bytes(Buffer.alloc(1 << 20, "a"));
    assert.equal(big.toString(), REDACTED);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  });
});
