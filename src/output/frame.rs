//! Line framing ([`LineFramer`]) and the raw tail of a replica's output ([`Tail`]).

use std::collections::VecDeque;

use super::{MAX_LINE, TAIL_BYTES, TAIL_LINES};

/// One framed piece of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n` (any `\r` is kept), or the last piece of an
    /// over-long line.
    Line(&'a [u8]),
    /// `MAX_LINE` bytes of a longer line; more of the same line follows.
    Piece(&'a [u8]),
}

/// Splits a byte stream on `\n`, in bounded memory.
///
/// Complete lines inside one read are returned as slices of that read, with no copy;
/// only a line split across reads is assembled in the framer's buffer.
#[derive(Debug)]
pub struct LineFramer {
    pending: Vec<u8>,
    /// `pending` was handed out as a frame and must be cleared on the next call.
    handed_out: bool,
    max: usize,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineFramer {
    /// A framer cutting lines at `MAX_LINE`.
    pub fn new() -> Self {
        Self::with_max(MAX_LINE)
    }

    /// A framer cutting lines at `max` bytes (at least 1).
    pub fn with_max(max: usize) -> Self {
        LineFramer {
            pending: Vec::new(),
            handed_out: false,
            max: max.max(1),
        }
    }

    /// Returns the next frame from `data[*pos..]`, advancing `pos`, or `None` when
    /// the rest of `data` is an incomplete line (kept for the next read).
    pub fn next_frame<'a>(&'a mut self, data: &'a [u8], pos: &mut usize) -> Option<Frame<'a>> {
        if self.handed_out {
            self.pending.clear();
            self.handed_out = false;
        }
        let rest = &data[(*pos).min(data.len())..];
        if rest.is_empty() {
            return None;
        }
        let have = self.pending.len();
        // A newline within the first `max + 1` bytes of the line ends a frame of at
        // most `max` bytes. Past that, the line is known to be longer than `max`.
        let window = (self.max + 1 - have).min(rest.len());
        match find_newline(&rest[..window]) {
            Some(i) => {
                *pos += i + 1;
                if have == 0 {
                    return Some(Frame::Line(&rest[..i]));
                }
                self.pending.extend_from_slice(&rest[..i]);
                self.handed_out = true;
                Some(Frame::Line(&self.pending))
            }
            None if have + rest.len() > self.max => {
                let take = self.max - have;
                *pos += take;
                if have == 0 {
                    return Some(Frame::Piece(&rest[..take]));
                }
                self.pending.extend_from_slice(&rest[..take]);
                self.handed_out = true;
                Some(Frame::Piece(&self.pending))
            }
            None => {
                self.pending.extend_from_slice(rest);
                *pos = data.len();
                None
            }
        }
    }

    /// At end of input: the last line if it had no newline.
    pub fn finish(&mut self) -> Option<&[u8]> {
        if self.handed_out {
            self.pending.clear();
            self.handed_out = false;
        }
        if self.pending.is_empty() {
            return None;
        }
        self.handed_out = true;
        Some(&self.pending)
    }
}

/// Position of the first `\n`. A word-at-a-time scan: `memchr` is not a direct
/// dependency, and a byte loop is several times slower on long lines.
fn find_newline(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = s.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ NL;
        // Classic "has zero byte": the lowest set bit marks the first zero byte
        // exactly (false positives only occur above a real one).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

// ---------------------------------------------------------------------------
// Tail
// ---------------------------------------------------------------------------

/// The last lines of a replica's output, unredacted, for exit classification
/// (SPEC 5). Never printed.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<Vec<u8>>,
    /// Sum of line lengths plus one separator each.
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    /// A `ready = { log = … }` probe waiting for its line (issue 14).
    watch: Option<LineWatch>,
}

/// Calls `on_match` once, for the first line that matches `re`.
pub(crate) struct LineWatch {
    /// The pattern.
    pub re: regex::Regex,
    /// What to do then.
    pub on_match: Box<dyn FnOnce() + Send>,
}

impl std::fmt::Debug for LineWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWatch")
            .field("re", &self.re.as_str())
            .finish()
    }
}

impl Default for Tail {
    fn default() -> Self {
        Self::new()
    }
}

impl Tail {
    /// A tail of [`TAIL_LINES`] lines and at most [`TAIL_BYTES`] bytes.
    pub(crate) fn new() -> Self {
        Self::with_limits(TAIL_LINES, TAIL_BYTES)
    }

    /// A tail with other limits (both at least 1).
    pub fn with_limits(max_lines: usize, max_bytes: usize) -> Self {
        Tail {
            lines: VecDeque::new(),
            bytes: 0,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            watch: None,
        }
    }

    /// Watches the lines pushed from now on; replaces an earlier watch.
    pub(crate) fn watch(&mut self, watch: Option<LineWatch>) {
        self.watch = watch;
    }

    /// Adds a line (without newline). A line longer than the byte limit keeps its
    /// end. Evicted buffers are reused, so a full tail allocates nothing.
    pub fn push(&mut self, line: &[u8]) {
        if self
            .watch
            .as_ref()
            .is_some_and(|w| w.re.is_match(&String::from_utf8_lossy(line)))
        {
            if let Some(w) = self.watch.take() {
                (w.on_match)();
            }
        }
        let limit = self.max_bytes - 1;
        let line = &line[line.len().saturating_sub(limit)..];
        let mut reuse = None;
        while !self.lines.is_empty()
            && (self.lines.len() >= self.max_lines || self.bytes + line.len() + 1 > self.max_bytes)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
                reuse = Some(old);
            }
        }
        let mut buf = reuse.unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(line);
        self.bytes += buf.len() + 1;
        self.lines.push_back(buf);
    }

    /// The lines joined with `\n`, invalid UTF-8 replaced.
    pub(crate) fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes);
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&String::from_utf8_lossy(line));
        }
        out
    }

    /// Forgets every line (a new run of the replica); a watch set for the new
    /// run stays.
    pub(crate) fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut LineFramer, reads: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        for data in reads {
            let mut pos = 0;
            while let Some(f) = framer.next_frame(data, &mut pos) {
                out.push(match f {
                    Frame::Line(b) => (true, b.to_vec()),
                    Frame::Piece(b) => (false, b.to_vec()),
                });
            }
        }
        if let Some(last) = framer.finish() {
            out.push((true, last.to_vec()));
        }
        out
    }

    fn lines(v: &[(bool, Vec<u8>)]) -> Vec<String> {
        v.iter()
            .map(|(c, b)| {
                format!(
                    "{}{}",
                    if *c { "" } else { "+" },
                    String::from_utf8_lossy(b)
                )
            })
            .collect()
    }

    #[test]
    fn framing_basic_cases() {
        let mut f = LineFramer::new();
        assert_eq!(lines(&frames(&mut f, &[b"a\nb\n"])), ["a", "b"]);
        assert_eq!(lines(&frames(&mut f, &[b"no newline"])), ["no newline"]);
        assert_eq!(
            lines(&frames(&mut f, &[b"crlf\r\nx\r\n"])),
            ["crlf\r", "x\r"]
        );
        assert_eq!(lines(&frames(&mut f, &[b"\n\na\n\n"])), ["", "", "a", ""]);
        assert_eq!(
            lines(&frames(&mut f, &[b"sp", b"li", b"t\nne", b"xt\n"])),
            ["split", "next"]
        );
        assert_eq!(lines(&frames(&mut f, &[b""])), Vec::<String>::new());
    }

    #[test]
    fn framing_long_lines_in_pieces() {
        let mut f = LineFramer::with_max(4);
        assert_eq!(lines(&frames(&mut f, &[b"abcd\n"])), ["abcd"]);
        assert_eq!(lines(&frames(&mut f, &[b"abcde\n"])), ["+abcd", "e"]);
        assert_eq!(
            lines(&frames(&mut f, &[b"ab", b"cd", b"\nxy"])),
            ["abcd", "xy"]
        );
        assert_eq!(
            lines(&frames(&mut f, &[b"ab", b"cdefghij"])),
            ["+abcd", "+efgh", "ij"]
        );
        assert_eq!(lines(&frames(&mut f, &[b"abcdefgh"])), ["+abcd", "efgh"]);
    }

    #[test]
    fn framing_one_megabyte_line() {
        let mut f = LineFramer::new();
        let mut data = vec![b'x'; 1 << 20];
        data.push(b'\n');
        let reads: Vec<&[u8]> = data.chunks(10_000).collect();
        let out = frames(&mut f, &reads);
        assert_eq!(out.len(), 16);
        assert!(out[..15].iter().all(|(c, b)| !c && b.len() == MAX_LINE));
        assert!(out[15].0);
        assert_eq!(out.iter().map(|(_, b)| b.len()).sum::<usize>(), 1 << 20);
    }

    #[test]
    fn find_newline_matches_naive() {
        let mut data = vec![b'a'; 100];
        for i in 0..100 {
            data[i] = b'\n';
            assert_eq!(find_newline(&data), Some(i));
            assert_eq!(find_newline(&data[i + 1..]), None);
            data[i] = 0x8a; // high bit set, low bits like '\n'
        }
        assert_eq!(find_newline(&[0x0b, 0x09, 0x0a]), Some(2));
    }

    #[test]
    fn tail_keeps_last_lines_and_bytes() {
        let mut t = Tail::with_limits(3, 100);
        for i in 0..5 {
            t.push(format!("line {i}").as_bytes());
        }
        assert_eq!(t.text(), "line 2\nline 3\nline 4");
        let mut t = Tail::with_limits(200, 10);
        t.push(b"aaaa");
        t.push(b"bbbb");
        t.push(b"cc");
        assert_eq!(t.text(), "bbbb\ncc");
        t.push(&[b'z'; 50]);
        assert_eq!(t.text(), "z".repeat(9));
        t.push(b"\xffok");
        assert!(t.text().ends_with("\u{FFFD}ok"));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.text(), "");
    }

    #[test]
    fn default_tail_is_bounded() {
        let mut t = Tail::new();
        for _ in 0..1000 {
            t.push(&[b'x'; 1000]);
        }
        assert!(t.len() <= TAIL_LINES);
        assert!(t.text().len() <= TAIL_BYTES);
    }
}
