//! Wire framing shared with the host (src/guest-protocol/frame-codec.ts):
//!   magic "PYR" + version byte | header length u32 BE | payload length u32 BE | JSON header | payload bytes
//! The magic lets a reader resynchronise after garbage instead of trusting a corrupt length forever.

pub const MAGIC: [u8; 4] = [b'P', b'Y', b'R', 1];
pub const PREFIX_LEN: usize = 12;
pub const MAX_HEADER_LEN: usize = 1 << 20;
pub const MAX_PAYLOAD_LEN: usize = 128 << 20;

#[derive(Debug, PartialEq)]
pub enum Item {
    Frame { header: Vec<u8>, payload: Vec<u8> },
    /// Bytes dropped while looking for the next valid frame start.
    Garbage { skipped: usize, reason: &'static str },
}

pub fn encode(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out
}

#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

fn find_magic(hay: &[u8]) -> Option<usize> {
    hay.windows(MAGIC.len()).position(|w| w == MAGIC)
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Drops partial input, e.g. when the host disconnected mid-frame.
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    pub fn next_item(&mut self) -> Option<Item> {
        if self.buf.is_empty() {
            return None;
        }
        match find_magic(&self.buf) {
            Some(0) => {}
            Some(at) => {
                self.buf.drain(..at);
                return Some(Item::Garbage { skipped: at, reason: "bad magic" });
            }
            None => {
                // Keep a tail that could be the start of a magic split across reads.
                let keep = (MAGIC.len() - 1).min(self.buf.len());
                let mut cut = self.buf.len() - keep;
                while cut < self.buf.len() && !MAGIC.starts_with(&self.buf[cut..]) {
                    cut += 1;
                }
                if cut == 0 {
                    return None;
                }
                self.buf.drain(..cut);
                return Some(Item::Garbage { skipped: cut, reason: "bad magic" });
            }
        }
        if self.buf.len() < PREFIX_LEN {
            return None;
        }
        let header_len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        let payload_len = u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]) as usize;
        if header_len == 0 || header_len > MAX_HEADER_LEN || payload_len > MAX_PAYLOAD_LEN {
            // Skip this magic so the search continues past it.
            self.buf.drain(..1);
            return Some(Item::Garbage { skipped: 1, reason: "frame length out of bounds" });
        }
        let total = PREFIX_LEN + header_len + payload_len;
        if self.buf.len() < total {
            return None;
        }
        let header = self.buf[PREFIX_LEN..PREFIX_LEN + header_len].to_vec();
        let payload = self.buf[PREFIX_LEN + header_len..total].to_vec();
        self.buf.drain(..total);
        Some(Item::Frame { header, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Decoder) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = d.next_item() {
            out.push(item);
        }
        out
    }

    #[test]
    fn decodes_frames_split_at_every_byte() {
        let mut wire = encode(b"{\"id\":1}", b"payload");
        wire.extend(encode(b"{\"id\":2}", b""));
        let mut d = Decoder::default();
        let mut items = Vec::new();
        for b in &wire {
            d.push(&[*b]);
            items.extend(drain(&mut d));
        }
        assert_eq!(
            items,
            vec![
                Item::Frame { header: b"{\"id\":1}".to_vec(), payload: b"payload".to_vec() },
                Item::Frame { header: b"{\"id\":2}".to_vec(), payload: vec![] },
            ]
        );
    }

    #[test]
    fn resynchronises_after_garbage_and_bad_lengths() {
        let mut d = Decoder::default();
        d.push(b"garbage");
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        bad.extend_from_slice(&0u32.to_be_bytes());
        d.push(&bad);
        d.push(&encode(b"{}", b"x"));
        let items = drain(&mut d);
        assert!(matches!(items.last(), Some(Item::Frame { .. })));
        assert!(items.iter().any(|i| matches!(i, Item::Garbage { reason: "frame length out of bounds", .. })));
    }

    #[test]
    fn keeps_a_magic_prefix_split_across_reads() {
        let mut d = Decoder::default();
        let wire = encode(b"{}", b"");
        d.push(b"zz");
        d.push(&wire[..2]);
        let first = drain(&mut d);
        assert_eq!(first, vec![Item::Garbage { skipped: 2, reason: "bad magic" }]);
        d.push(&wire[2..]);
        assert_eq!(drain(&mut d), vec![Item::Frame { header: b"{}".to_vec(), payload: vec![] }]);
    }
}
