//! Bounded output capture: keeps the first and the last half of the cap, counts what was dropped.
//! Test failures print their summary last, so the tail matters as much as the head.

use std::collections::VecDeque;

pub struct Capture {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Capture {
        let head_cap = cap / 2;
        Capture { head_cap, tail_cap: cap - head_cap, head: Vec::new(), tail: VecDeque::new(), total: 0 }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < self.head_cap {
            let n = (self.head_cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
        } else {
            self.tail.extend(data);
            let excess = self.tail.len().saturating_sub(self.tail_cap);
            self.tail.drain(..excess);
        }
    }

    /// Returns (kept bytes, total bytes seen). Kept = head followed by tail.
    pub fn finish(&self) -> (Vec<u8>, u64) {
        let mut out = self.head.clone();
        out.extend(self.tail.iter());
        (out, self.total)
    }

    /// Length of the head part, i.e. where omitted bytes (if any) were cut out.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut c = Capture::new(10);
        c.push(b"abc");
        c.push(b"de");
        assert_eq!(c.finish(), (b"abcde".to_vec(), 5));
    }

    #[test]
    fn keeps_head_and_tail_over_the_cap() {
        let mut c = Capture::new(6);
        for chunk in [&b"0123"[..], b"4567", b"89"] {
            c.push(chunk);
        }
        assert_eq!(c.finish(), (b"012789".to_vec(), 10));
        assert_eq!(c.head_len(), 3);
    }
}
