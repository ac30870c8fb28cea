//! [`ShownLines`]: a stream of framed lines redacted as a terminal shows them.
//!
//! Worker output (the pumps in [`crate::output`]) and `agentsup exec`'s masked
//! output print through this one type, so both render a line ([`super::terminal`])
//! before redacting it, and both carry the redaction across the pieces of a line
//! too long to buffer ([`StreamRedactor`]).

use std::sync::Arc;

use super::{Redactor, StreamRedactor, terminal};

/// Redacts lines, and over-long lines delivered in pieces, as a terminal shows
/// them: escape sequences, backspaces or NULs between pieces of a key hide
/// nothing (issue 12). Reuses its buffers, so the hot path does not allocate.
#[derive(Debug, Default)]
pub(crate) struct ShownLines {
    /// A line as a terminal shows it, when it holds control characters.
    rendered: Vec<u8>,
    /// Redacted text, when it differs from its input.
    scratch: Vec<u8>,
    stream: StreamRedactor,
    /// Set while an over-long line is in progress: the redactor it started with,
    /// so the carry always matches the matcher.
    long: Option<Arc<Redactor>>,
    /// Start of a UTF-8 sequence cut at the end of the last piece's output.
    utf8_hold: Vec<u8>,
    /// The same for the last piece's input, so that the terminal view never joins
    /// two halves of a C1 control.
    raw_hold: Vec<u8>,
}

impl ShownLines {
    /// No line in progress.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// True while a long line's pieces are coming (the last call had `complete`
    /// false).
    pub(crate) fn in_long_line(&self) -> bool {
        self.long.is_some()
    }

    /// The text to print for `bytes`, which is a whole line without its newline
    /// (`complete`), or a piece of a longer line that more of follows. `None` when
    /// all of a piece is still carry. Use `current` for a line; a long line keeps
    /// the redactor its first piece came with until it completes.
    ///
    /// A complete line's text is `bytes` itself when it needs no change.
    pub(crate) fn redact<'a>(
        &'a mut self,
        bytes: &'a [u8],
        complete: bool,
        current: &Arc<Redactor>,
    ) -> Option<&'a [u8]> {
        if self.long.is_none() && complete {
            let shown = terminal::render_slice(bytes, &mut self.rendered);
            return Some(current.redact_slice(shown, &mut self.scratch));
        }
        let redactor = Arc::clone(self.long.get_or_insert_with(|| Arc::clone(current)));
        let mut input = std::mem::take(&mut self.raw_hold);
        input.extend_from_slice(bytes);
        if !complete {
            let keep = input.len() - incomplete_utf8_tail(&input);
            self.raw_hold.extend_from_slice(&input[keep..]);
            input.truncate(keep);
        }
        self.rendered.clear();
        terminal::render(&input, &mut self.rendered);
        self.scratch.clear();
        self.scratch.append(&mut self.utf8_hold);
        self.stream
            .feed(&redactor, &self.rendered, &mut self.scratch);
        if complete {
            self.stream.finish(&redactor, &mut self.scratch);
            self.long = None;
        } else {
            let keep = self.scratch.len() - incomplete_utf8_tail(&self.scratch);
            self.utf8_hold.extend_from_slice(&self.scratch[keep..]);
            self.scratch.truncate(keep);
            if self.scratch.is_empty() {
                return None;
            }
        }
        Some(&self.scratch)
    }
}

/// Bytes at the end of `s` that start a UTF-8 sequence cut short, so a piece of a
/// long line can end on a char boundary instead of printing two U+FFFD.
pub(crate) fn incomplete_utf8_tail(s: &[u8]) -> usize {
    for back in 1..=s.len().min(3) {
        let b = s[s.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Sensitive;

    fn redactor(pairs: &[(&str, &str)]) -> Arc<Redactor> {
        Arc::new(Redactor::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Sensitive::new(v.to_string()))),
        ))
    }

    /// Feeds `line` in pieces of `piece` bytes (the last one complete).
    fn shown_in_pieces(r: &Arc<Redactor>, line: &[u8], piece: usize) -> Vec<u8> {
        let mut lines = ShownLines::new();
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = line.chunks(piece).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            if let Some(t) = lines.redact(c, last, r) {
                out.extend_from_slice(t);
            }
            assert_eq!(lines.in_long_line(), !last);
        }
        out
    }

    #[test]
    fn a_key_joined_by_controls_is_redacted_whole_or_in_pieces() {
        let key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
        let r = redactor(&[("OPENAI_API_KEY", key)]);
        let parts: Vec<&str> = key
            .as_bytes()
            .chunks(12)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for sep in [
            "\x1b[0m",
            "\x1b]0;title\x07",
            "Z\x08",
            "\0",
            "\u{9b}1m",
            "é\x08",
            // Default-ignorable characters a terminal shows as nothing.
            "\u{200b}",
            "\u{ad}",
            "\u{2060}",
            "\u{feff}",
            "\u{202e}\u{202c}",
            "\u{2066}\u{2069}",
            "\u{200d}",
            "\u{fe0f}",
            "\u{e0041}",
        ] {
            let line = format!("key={} done", parts.join(sep));
            let mut lines = ShownLines::new();
            let whole = lines.redact(line.as_bytes(), true, &r).unwrap().to_vec();
            assert_eq!(whole, b"key=[redacted:OPENAI_API_KEY] done", "{sep:?}");
            // Pieces are rendered one at a time, so a control cut between two
            // pieces may show as text; but no control is printed, and what shows
            // never holds 16 characters of the key.
            for piece in [1, 3, 7, 16, 40] {
                let out = shown_in_pieces(&r, line.as_bytes(), piece);
                let text = String::from_utf8_lossy(&out);
                assert!(
                    !text.chars().any(char::is_control),
                    "{sep:?} / {piece}: {text:?}"
                );
                for run in key.as_bytes().windows(16) {
                    assert!(
                        !out.windows(16).any(|w| w == run),
                        "{sep:?} / {piece}: {text:?}"
                    );
                }
            }
            // Cut between the separators, pieces give what the whole line gives.
            let cut = line.find(parts[1]).unwrap() + 2;
            let mut lines = ShownLines::new();
            let mut out = lines
                .redact(&line.as_bytes()[..cut], false, &r)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            out.extend_from_slice(lines.redact(&line.as_bytes()[cut..], true, &r).unwrap());
            assert_eq!(out, whole, "{sep:?}");
        }
    }

    #[test]
    fn plain_line_is_returned_as_is() {
        let r = redactor(&[("K", "sk-0123456789abcdef")]);
        let mut lines = ShownLines::new();
        let line = b"nothing secret here";
        let text = lines.redact(line, true, &r).unwrap();
        assert!(std::ptr::eq(text, &line[..]));
    }

    #[test]
    fn utf8_tail_detection() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_utf8_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_utf8_tail(b"\xff"), 0);
    }
}
