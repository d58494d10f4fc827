/// Output buffer that keeps the first and last `cap / 2` bytes of a stream and counts what it drops,
/// so a chatty program cannot exhaust memory and both the start and the end of its output survive.
#[derive(Debug, Clone)]
pub struct CappedBuffer {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    half: usize,
    total: u64,
}

impl CappedBuffer {
    /// A buffer that holds at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            half: (cap / 2).max(1),
            total: 0,
        }
    }

    /// Appends bytes, dropping from the middle once the cap is reached.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.half {
            let take = bytes.len().min(self.half - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.half {
            self.tail.clear();
            bytes = &bytes[bytes.len() - self.half..];
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.half);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Total bytes seen, including dropped ones.
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// True when bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept bytes, with a marker line where bytes were dropped.
    pub fn into_bytes(self) -> Vec<u8> {
        let dropped = self.total - (self.head.len() + self.tail.len()) as u64;
        let mut out = self.head;
        if dropped > 0 {
            out.extend_from_slice(format!("\n[… {dropped} bytes dropped …]\n").as_bytes());
        }
        out.extend(self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut b = CappedBuffer::new(10);
        b.push(b"abc");
        b.push(b"de");
        assert!(!b.truncated());
        assert_eq!(b.into_bytes(), b"abcde");
    }

    #[test]
    fn keeps_head_and_tail_over_the_cap() {
        let mut b = CappedBuffer::new(8);
        for chunk in [&b"0123"[..], b"456789", b"abcdef"] {
            b.push(chunk);
        }
        assert_eq!(b.total_len(), 16);
        assert!(b.truncated());
        let text = String::from_utf8(b.into_bytes()).unwrap();
        assert!(text.starts_with("0123\n[… 8 bytes dropped …]\n"), "{text}");
        assert!(text.ends_with("cdef"), "{text}");
    }

    #[test]
    fn a_single_huge_push_is_capped() {
        let mut b = CappedBuffer::new(100);
        b.push(&vec![b'x'; 1_000_000]);
        assert_eq!(b.total_len(), 1_000_000);
        assert!(b.into_bytes().len() < 200);
    }
}
