/**
 * Wire framing shared with the guest agent (guest/agent/src/frame.rs):
 *   magic "PYR" + version byte | header length u32 BE | payload length u32 BE | JSON header | payload
 * The magic lets either side resynchronise after garbage rather than trust a corrupt length.
 */
export const FRAME_MAGIC = Buffer.from([0x50, 0x59, 0x52, 0x01]);
export const FRAME_PREFIX_LEN = 12;
export const MAX_HEADER_LEN = 1 << 20;
export const MAX_PAYLOAD_LEN = 128 << 20;

export type DecodedItem =
  | { kind: "frame"; header: Record<string, unknown>; payload: Buffer }
  | { kind: "garbage"; skipped: number; reason: string };

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

/** Incremental decoder: push bytes as they arrive, then drain items. Never throws on bad input. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

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

  next(): DecodedItem | undefined {
    if (this.buffered === 0) return undefined;
    // Wait for the whole frame before flattening, so a large payload arriving in chunks is copied once.
    if (this.chunks.length > 1 && this.chunks[0]!.length >= FRAME_PREFIX_LEN && this.chunks[0]!.subarray(0, 4).equals(FRAME_MAGIC)) {
      const head = this.chunks[0]!;
      const total = FRAME_PREFIX_LEN + head.readUInt32BE(4) + head.readUInt32BE(8);
      if (head.readUInt32BE(4) <= MAX_HEADER_LEN && head.readUInt32BE(8) <= MAX_PAYLOAD_LEN && this.buffered < total) return undefined;
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
    if (headerLen === 0 || headerLen > MAX_HEADER_LEN || payloadLen > MAX_PAYLOAD_LEN) {
      this.consume(1);
      return { kind: "garbage", skipped: 1, reason: "frame length out of bounds" };
    }
    const total = FRAME_PREFIX_LEN + headerLen + payloadLen;
    if (buf.length < total) return undefined;
    const headerBytes = buf.subarray(FRAME_PREFIX_LEN, FRAME_PREFIX_LEN + headerLen);
    const payload = Buffer.from(buf.subarray(FRAME_PREFIX_LEN + headerLen, total));
    this.consume(total);
    let header: unknown;
    try {
      header = JSON.parse(headerBytes.toString("utf8"));
    } catch {
      return { kind: "garbage", skipped: total, reason: "header is not valid JSON" };
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      return { kind: "garbage", skipped: total, reason: "header is not a JSON object" };
    }
    return { kind: "frame", header: header as Record<string, unknown>, payload };
  }
}
