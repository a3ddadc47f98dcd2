/**
 * Wire framing shared with the guest agent (guest/agent/src/frame.rs):
 *   magic "PYR" + version byte | header length u32 BE | payload length u32 BE | JSON header | payload
 * The magic lets either side resynchronise after garbage rather than trust a corrupt length.
 *
 * The host decodes what the guest sends, and root in the guest can send anything: the decoder never
 * buffers more than one frame within its limits, never throws on input, and reports every way the
 * input was wrong so the caller can treat it as the protocol violation it is.
 */
export const FRAME_MAGIC = Buffer.from([0x50, 0x59, 0x52, 0x01]);
export const FRAME_PREFIX_LEN = 12;
export const MAX_HEADER_LEN = 1 << 20;
export const MAX_PAYLOAD_LEN = 128 << 20;
/** Deepest JSON nesting a header may have; the deepest real reply (file.list) nests 3 levels. */
export const MAX_HEADER_DEPTH = 16;

export type DecodedItem = { kind: "frame"; header: Record<string, unknown>; payload: Buffer } | { kind: "garbage"; skipped: number; reason: string };

/** Bounds a decoder enforces from the 12-byte prefix, before any of the frame is buffered. */
export interface FrameLimits {
  maxHeaderBytes: number;
  /** Read at every prefix: a host client allows only what its pending requests may receive. */
  maxPayloadBytes: () => number;
}

const DEFAULT_LIMITS: FrameLimits = { maxHeaderBytes: MAX_HEADER_LEN, maxPayloadBytes: () => MAX_PAYLOAD_LEN };

export function encodeFrame(header: Record<string, unknown>, payload: Buffer = Buffer.alloc(0)): Buffer {
  const headerBytes = Buffer.from(JSON.stringify(header), "utf8");
  if (headerBytes.length > MAX_HEADER_LEN) throw new RangeError(`frame header is ${headerBytes.length} bytes (max ${MAX_HEADER_LEN})`);
  if (payload.length > MAX_PAYLOAD_LEN) throw new RangeError(`frame payload is ${payload.length} bytes (max ${MAX_PAYLOAD_LEN})`);
  const prefix = Buffer.alloc(FRAME_PREFIX_LEN);
  FRAME_MAGIC.copy(prefix, 0);
  prefix.writeUInt32BE(headerBytes.length, 4);
  prefix.writeUInt32BE(payload.length, 8);
  return Buffer.concat([prefix, headerBytes, payload]);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Depth of the deepest array/object in a JSON text, stopping early once past `limit`. */
export function jsonDepthExceeds(bytes: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c)
        i++; // backslash: skip the escaped byte
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x7b || b === 0x5b) {
      if (++depth > limit) return true;
    } else if (b === 0x7d || b === 0x5d) depth--;
  }
  return false;
}

/** Parses a header: valid UTF-8, bounded nesting, a JSON object — or says what was wrong. */
function parseHeader(bytes: Buffer): Record<string, unknown> | string {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return "header is not valid UTF-8";
  }
  if (jsonDepthExceeds(bytes, MAX_HEADER_DEPTH)) return `header nests deeper than ${MAX_HEADER_DEPTH} levels`;
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch {
    return "header is not valid JSON";
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) return "header is not a JSON object";
  return header as Record<string, unknown>;
}

/** Incremental decoder: push bytes as they arrive, then drain items. Never throws on bad input. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly limits: FrameLimits = DEFAULT_LIMITS) {}

  push(data: Buffer): void {
    if (data.length === 0) return;
    this.chunks.push(data);
    this.buffered += data.length;
  }

  reset(): void {
    this.chunks = [];
    this.buffered = 0;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Bytes the frame at the front still needs, or 0 when nothing is partially buffered. */
  get missingBytes(): number {
    if (this.buffered === 0) return 0;
    const head = this.chunks[0]!;
    if (this.buffered < FRAME_PREFIX_LEN || head.length < FRAME_PREFIX_LEN) return FRAME_PREFIX_LEN - Math.min(this.buffered, FRAME_PREFIX_LEN);
    return Math.max(0, FRAME_PREFIX_LEN + head.readUInt32BE(4) + head.readUInt32BE(8) - this.buffered);
  }

  private flat(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  private consume(n: number): void {
    const buf = this.flat();
    const rest = buf.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
  }

  private withinLimits(headerLen: number, payloadLen: number): boolean {
    return headerLen > 0 && headerLen <= this.limits.maxHeaderBytes && payloadLen <= this.limits.maxPayloadBytes();
  }

  next(): DecodedItem | undefined {
    if (this.buffered === 0) return undefined;
    // Wait for the whole frame before flattening, so a large payload arriving in chunks is copied once.
    if (this.chunks.length > 1 && this.chunks[0]!.length >= FRAME_PREFIX_LEN && this.chunks[0]!.subarray(0, 4).equals(FRAME_MAGIC)) {
      const head = this.chunks[0]!;
      const total = FRAME_PREFIX_LEN + head.readUInt32BE(4) + head.readUInt32BE(8);
      if (this.withinLimits(head.readUInt32BE(4), head.readUInt32BE(8)) && this.buffered < total) return undefined;
    }
    const buf = this.flat();
    const at = buf.indexOf(FRAME_MAGIC);
    if (at > 0) {
      this.consume(at);
      return { kind: "garbage", skipped: at, reason: "bad magic" };
    }
    if (at < 0) {
      // Keep a tail that may be the first bytes of a magic split across reads.
      let cut = Math.max(0, buf.length - (FRAME_MAGIC.length - 1));
      while (cut < buf.length && !FRAME_MAGIC.subarray(0, buf.length - cut).equals(buf.subarray(cut))) cut++;
      if (cut === 0) return undefined;
      this.consume(cut);
      return { kind: "garbage", skipped: cut, reason: "bad magic" };
    }
    if (buf.length < FRAME_PREFIX_LEN) return undefined;
    const headerLen = buf.readUInt32BE(4);
    const payloadLen = buf.readUInt32BE(8);
    if (!this.withinLimits(headerLen, payloadLen)) {
      // Decided from the prefix alone: an oversized frame is never buffered.
      this.consume(1);
      return { kind: "garbage", skipped: 1, reason: `frame length out of bounds (header ${headerLen} bytes, payload ${payloadLen} bytes)` };
    }
    const total = FRAME_PREFIX_LEN + headerLen + payloadLen;
    if (buf.length < total) return undefined;
    const headerBytes = buf.subarray(FRAME_PREFIX_LEN, FRAME_PREFIX_LEN + headerLen);
    const payload = Buffer.from(buf.subarray(FRAME_PREFIX_LEN + headerLen, total));
    const header = parseHeader(headerBytes);
    this.consume(total);
    if (typeof header === "string") return { kind: "garbage", skipped: total, reason: header };
    return { kind: "frame", header, payload };
  }
}
