import { capturedText, type CapturedStream } from "../guest-protocol/messages.js";

export const REDACTED = "[REDACTED]";

/**
 * Where pyro only sees one side of a cut (the agent's exec output cap drops the middle; a page or
 * read starts or ends where the data pyro fetched does), a fragment of a secret touching the cut
 * cannot be told apart from ordinary bytes for sure. A fragment this long or longer that is a
 * prefix (before the cut) or a suffix (after it) of a secret is redacted, so at most 3 bytes of a
 * secret survive such a cut; shorter coincidences are too common in ordinary output to redact.
 */
export const MIN_CUT_FRAGMENT_BYTES = 4;

/** Which ends of a buffer are cuts: bytes pyro did not see lie just before / just after it. */
export interface CutEdges {
  cutBefore?: boolean;
  cutAfter?: boolean;
  /**
   * With cutAfter, for a paged window: a secret's start at the end is left for the next page
   * (which will see what follows it) instead of redacted, unless nothing in the window precedes it.
   */
  holdBack?: boolean;
}

/** A redacted slice of a buffer: its bytes, and the span of the input they stand for. */
export interface RedactedWindow {
  bytes: Buffer;
  from: number;
  end: number;
}

type Range = [start: number, end: number];

/** KMP failure function: f[i] = length of the longest proper border of p[0..i]. */
function failure(p: Buffer): Int32Array {
  const f = new Int32Array(p.length);
  for (let i = 1, k = 0; i < p.length; i++) {
    while (k > 0 && p[i] !== p[k]) k = f[k - 1]!;
    if (p[i] === p[k]) k++;
    f[i] = k;
  }
  return f;
}

/** Length of the longest proper prefix of `p` that the byte sequence at(0..n-1) ends with. */
function overlap(p: Buffer, f: Int32Array, n: number, at: (i: number) => number): number {
  let k = 0;
  for (let i = 0; i < n; i++) {
    const b = at(i);
    while (k > 0 && b !== p[k]) k = f[k - 1]!;
    if (b === p[k]) k++;
    if (k === p.length) k = f[k - 1]!;
  }
  return k;
}

/** One byte form a secret takes in output, with what it takes to find it whole or cut. */
class SecretPattern {
  private readonly fail: Int32Array;
  private readonly reversed: Buffer;
  private readonly reversedFail: Int32Array;
  /** Smallest period: occurrences overlapping a found one start a multiple of it later. */
  private readonly period: number;

  constructor(readonly bytes: Buffer) {
    this.fail = failure(bytes);
    this.reversed = Buffer.from(bytes).reverse();
    this.reversedFail = failure(this.reversed);
    this.period = bytes.length - this.fail[bytes.length - 1]!;
  }

  /** Adds the spans covered by occurrences (overlapping ones included) to `out`; linear in data. */
  occurrences(data: Buffer, out: Range[]): void {
    const p = this.bytes;
    let i = data.indexOf(p);
    while (i !== -1) {
      // A periodic secret can repeat in overlapping copies: cover the whole periodic run at once
      // rather than searching again from every byte.
      let run = i + p.length;
      while (run < data.length && data[run] === data[run - this.period]) run++;
      const repeats = Math.floor((run - i - p.length) / this.period);
      out.push([i, i + repeats * this.period + p.length]);
      i = data.indexOf(p, i + (repeats + 1) * this.period);
    }
  }

  /** Length of the longest proper prefix of the secret that `data` ends with. */
  prefixAtEnd(data: Buffer): number {
    const start = Math.max(0, data.length - (this.bytes.length - 1));
    return overlap(this.bytes, this.fail, data.length - start, (i) => data[start + i]!);
  }

  /** Length of the longest proper suffix of the secret that `data` starts with. */
  suffixAtStart(data: Buffer): number {
    const n = Math.min(data.length, this.bytes.length - 1);
    return overlap(this.reversed, this.reversedFail, n, (i) => data[n - 1 - i]!);
  }
}

/**
 * The byte forms a secret can take in what pyro returns without the guest transforming it on
 * purpose: its UTF-8; its UTF-8 after a terminal's onlcr turned each newline into CRLF (shells run
 * on a PTY); and UTF-16LE (strings in binaries, Windows-format files).
 */
function secretForms(secret: string): Buffer[] {
  return [secret, secret.replace(/\n/g, "\r\n")].flatMap((s) => [Buffer.from(s, "utf8"), Buffer.from(s, "utf16le")]);
}

/**
 * Replaces secret values with [REDACTED] in any bytes or text pyro returns, logs or exports:
 * binary data included, and at cuts (truncation, paging, the agent's output cap) as well.
 */
export class Redactor {
  private readonly patterns: SecretPattern[];
  /** Bytes a read must fetch beyond each end of what it shows so a secret crossing that end is seen whole. */
  readonly contextBytes: number;

  constructor(secrets: Record<string, string>) {
    const forms = new Map<string, Buffer>();
    for (const value of Object.values(secrets)) if (value) for (const form of secretForms(value)) forms.set(form.toString("hex"), form);
    this.patterns = [...forms.values()].map((form) => new SecretPattern(form));
    this.contextBytes = Math.max(0, ...this.patterns.map((p) => p.bytes.length - 1));
  }

  get active(): boolean {
    return this.patterns.length > 0;
  }

  /** Length of the secret fragment `data` ends with, or 0 if it is shorter than MIN_CUT_FRAGMENT_BYTES. */
  private fragmentAtEnd(data: Buffer): number {
    const k = Math.max(0, ...this.patterns.map((p) => p.prefixAtEnd(data)));
    return k >= MIN_CUT_FRAGMENT_BYTES ? k : 0;
  }

  /** Spans of `data` to redact, sorted, merged (touching spans too). */
  private ranges(data: Buffer, edges: CutEdges): Range[] {
    const found: Range[] = [];
    for (const pattern of this.patterns) pattern.occurrences(data, found);
    if (edges.cutAfter) {
      const k = this.fragmentAtEnd(data);
      if (k > 0) found.push([data.length - k, data.length]);
    }
    if (edges.cutBefore) {
      const k = Math.max(0, ...this.patterns.map((p) => p.suffixAtStart(data)));
      if (k >= MIN_CUT_FRAGMENT_BYTES) found.push([0, k]);
    }
    found.sort((a, b) => a[0] - b[0]);
    const merged: Range[] = [];
    for (const range of found) {
      const last = merged[merged.length - 1];
      if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
      else merged.push([...range]);
    }
    return merged;
  }

  /**
   * Redacts the slice data[from, to) while seeing all of `data` (the context around the slice). A
   * secret crossing `to` is replaced whole and the slice ends after it (so `end` may exceed `to`);
   * one crossing `from` shows as [REDACTED] at the start. Callers that page resume at `end`.
   */
  window(data: Buffer, from: number, to: number, edges: CutEdges = {}): RedactedWindow {
    if (!this.active) return { bytes: data.subarray(from, to), from, end: to };
    if (edges.cutAfter && edges.holdBack) {
      const k = this.fragmentAtEnd(data);
      if (k > 0 && data.length - k > from) to = Math.min(to, data.length - k);
    }
    const ranges = this.ranges(data, edges);
    if (ranges.length === 0) return { bytes: data.subarray(from, to), from, end: to };
    const parts: Buffer[] = [];
    let pos = from;
    let end = to;
    for (const [start, stop] of ranges) {
      if (stop <= from) continue;
      if (start >= end) break;
      if (start > pos) parts.push(data.subarray(pos, start));
      parts.push(Buffer.from(REDACTED));
      pos = stop;
      end = Math.max(end, stop);
    }
    if (pos < end) parts.push(data.subarray(pos, end));
    return { bytes: Buffer.concat(parts), from, end };
  }

  /**
   * Redacts a stream piece by piece with bounded memory: each piece is redacted seeing the bytes
   * after it, up to the longest form of a secret, so one crossing a piece boundary is replaced whole.
   */
  stream(): { push(piece: Buffer): Buffer; end(): Buffer } {
    let carry: Buffer = Buffer.alloc(0);
    return {
      push: (piece) => {
        const data = carry.length ? Buffer.concat([carry, piece]) : piece;
        const ready = data.length - this.contextBytes;
        if (ready <= 0) {
          carry = data;
          return Buffer.alloc(0);
        }
        const shown = this.window(data, 0, ready);
        carry = data.subarray(shown.end);
        return shown.bytes;
      },
      end: () => {
        const rest = this.bytes(carry);
        carry = Buffer.alloc(0);
        return rest;
      },
    };
  }

  /** Redacts a whole buffer, text or binary; `edges` says whether it was cut from a larger stream. */
  bytes(data: Buffer, edges: CutEdges = {}): Buffer {
    return this.active && this.ranges(data, edges).length > 0 ? this.window(data, 0, data.length, edges).bytes : data;
  }

  text(input: string): string {
    if (!this.active) return input;
    const data = Buffer.from(input, "utf8");
    const redacted = this.bytes(data);
    return redacted === data ? input : redacted.toString("utf8");
  }

  /** Redacts every string inside a JSON-like value (results, log entries). */
  deep<T>(value: T): T {
    if (!this.active) return value;
    if (typeof value === "string") return this.text(value) as T;
    if (Array.isArray(value)) return value.map((v) => this.deep(v)) as T;
    if (value && typeof value === "object" && !(value instanceof Buffer)) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.deep(v)])) as T;
    }
    return value;
  }

  /**
   * Text of an output stream the agent capped (it keeps head and tail and drops the middle, which
   * pyro never sees): each side is redacted on its own, fragments touching the cut included.
   */
  capturedText(stream: CapturedStream): string {
    const omitted = stream.totalBytes - stream.bytes.length;
    if (omitted <= 0) {
      const bytes = this.bytes(stream.bytes);
      return capturedText({ bytes, headLength: bytes.length, totalBytes: bytes.length });
    }
    const head = this.bytes(stream.bytes.subarray(0, stream.headLength), { cutAfter: true });
    const tail = this.bytes(stream.bytes.subarray(stream.headLength), { cutBefore: true });
    return capturedText({ bytes: Buffer.concat([head, tail]), headLength: head.length, totalBytes: omitted + head.length + tail.length });
  }
}
