//! A worker's line as a terminal would show it, with no control character left.
//!
//! Output is printed in this form (pretty and JSON alike) and redacted in it, so
//! that what is redacted is exactly what a terminal, `less -R`, `jq -r` or an
//! ANSI-stripping log pipeline shows: a key printed in pieces joined by `ESC[0m`,
//! an OSC title, `Z\b` or NUL shows whole on a terminal, and would pass a redactor
//! that looked at the raw bytes, which the terminal never shows.
//!
//! What is done with each control:
//!
//! - escape sequences (CSI such as `ESC[0m` and cursor moves, OSC such as a window
//!   title, DCS/APC/PM/SOS strings, two-byte `ESC x`), and their C1 forms: removed;
//! - carriage return: the cursor goes back to the start of the line and what
//!   follows overwrites it, as on a terminal (`50%\r100%` shows `100%`), so a line
//!   starting with `\r` cannot print over agentsup's `name | ` label;
//! - backspace: the cursor steps back one character, and the next one overwrites;
//! - every other C0 control (NUL, BEL, …), DEL and C1 control: removed;
//! - tab and everything printable: kept.
//!
//! Cursor moves inside CSI sequences are not followed: the result holds no control
//! at all, so whatever it is, the terminal shows exactly it.

/// True when `line` holds a byte this module would change: a C0 control other
/// than tab, DEL, or a C1 control in UTF-8 (`C2 80`..`C2 9F`). A word at a time,
/// because almost every line is plain: per byte, `(b & 0x7f) + 1` is below 0x21
/// exactly for C0, DEL and the bytes 0x80..0x9F and 0xFF, which then get the exact
/// test (in UTF-8 text, continuation bytes do).
pub(crate) fn needs_render(line: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = line.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let word = u64::from_le_bytes(chunk);
        // Each byte of `x` is at most 0x80, so the "byte below n" test is exact.
        let x = ((word & LOW7) + ONES) & LOW7;
        if x.wrapping_sub(ONES * 0x21) & !x & HIGH != 0 && special_in(line, i, i + 8) {
            return true;
        }
        i += 8;
    }
    special_in(line, i, line.len())
}

/// Exact test of `line[from..to]`: a C0 control other than tab, DEL, or the
/// second byte of a C1 control (whose `C2` lead may be before `from`).
fn special_in(line: &[u8], from: usize, to: usize) -> bool {
    (from..to).any(|j| {
        let b = line[j];
        special(b) || ((0x80..=0x9f).contains(&b) && j > 0 && line[j - 1] == 0xc2)
    })
}

fn special(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    Esc,
    EscIntermediate,
    Csi,
    /// OSC, DCS, APC, PM, SOS: a string ended by BEL or ST.
    Str,
    StrEsc,
}

/// Appends to `out` the text a terminal shows for `line` (see the module doc).
/// Invalid UTF-8 bytes are kept, one cell each, for the caller's lossy printing.
pub(crate) fn render(line: &[u8], out: &mut Vec<u8>) {
    // Each cell is the byte range of `line` shown there.
    let mut cells: Vec<(u32, u32)> = Vec::with_capacity(line.len());
    let mut cursor = 0usize;
    let mut state = State::Ground;
    let mut base = 0usize;
    let put = |cells: &mut Vec<(u32, u32)>, cursor: &mut usize, start: usize, end: usize| {
        let cell = (start as u32, end as u32);
        if *cursor < cells.len() {
            cells[*cursor] = cell;
        } else {
            cells.push(cell);
        }
        *cursor += 1;
    };
    for chunk in line.utf8_chunks() {
        for (i, c) in chunk.valid().char_indices() {
            let (start, end) = (base + i, base + i + c.len_utf8());
            let code = c as u32;
            state = match state {
                State::Ground => match code {
                    0x1b => State::Esc,
                    0x9b => State::Csi,
                    0x90 | 0x98 | 0x9d | 0x9e | 0x9f => State::Str,
                    0x0d => {
                        cursor = 0;
                        State::Ground
                    }
                    0x08 => {
                        cursor = cursor.saturating_sub(1);
                        State::Ground
                    }
                    0x09 => {
                        put(&mut cells, &mut cursor, start, end);
                        State::Ground
                    }
                    0..=0x1f | 0x7f..=0x9f => State::Ground,
                    _ => {
                        put(&mut cells, &mut cursor, start, end);
                        State::Ground
                    }
                },
                State::Esc => match code {
                    0x5b => State::Csi,                             // [
                    0x5d | 0x50 | 0x58 | 0x5e | 0x5f => State::Str, // ] P X ^ _
                    0x1b => State::Esc,
                    0x20..=0x2f => State::EscIntermediate,
                    _ => State::Ground,
                },
                State::EscIntermediate => match code {
                    0x20..=0x2f => State::EscIntermediate,
                    0x1b => State::Esc,
                    _ => State::Ground,
                },
                State::Csi => match code {
                    0x20..=0x3f => State::Csi,
                    0x1b => State::Esc,
                    _ => State::Ground,
                },
                State::Str => match code {
                    0x07 | 0x9c => State::Ground,
                    0x1b => State::StrEsc,
                    _ => State::Str,
                },
                State::StrEsc => match code {
                    0x1b => State::StrEsc,
                    _ => State::Ground,
                },
            };
        }
        base += chunk.valid().len();
        for j in 0..chunk.invalid().len() {
            if state == State::Ground {
                put(&mut cells, &mut cursor, base + j, base + j + 1);
            }
        }
        base += chunk.invalid().len();
    }
    out.reserve(line.len());
    for (s, e) in cells {
        out.extend_from_slice(&line[s as usize..e as usize]);
    }
}

/// `line` itself when it needs no change, else its rendering in `scratch`.
pub(crate) fn render_slice<'a>(line: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if !needs_render(line) {
        return line;
    }
    scratch.clear();
    render(line, scratch);
    scratch
}

/// [`render`] for agentsup's own text, line by line (newlines kept).
pub(crate) fn render_str(text: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if !text.split('\n').any(|l| needs_render(l.as_bytes())) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    for (i, l) in text.split('\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        render(l.as_bytes(), &mut out);
    }
    // Cells are whole chars of valid UTF-8 input.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(line: &[u8]) -> String {
        let mut out = Vec::new();
        render(line, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(
            shown(b"sk-proj-abcd\x1b[0mefgh\x1b[31;1mijkl"),
            "sk-proj-abcdefghijkl"
        );
        assert_eq!(
            shown(b"abc\x1b]0;title\x07def\x1b]2;t\x1b\\ghi"),
            "abcdefghi"
        );
        assert_eq!(shown("a\u{9b}1mb\u{9d}x\u{9c}c".as_bytes()), "abc");
        assert_eq!(shown(b"a\x1b(Bb\x1b7c\x1bPq\x1b\\d"), "abcd");
    }

    #[test]
    fn cr_and_backspace_overwrite_like_a_terminal() {
        assert_eq!(shown(b"50%\r100%"), "100%");
        assert_eq!(shown(b"abcZ\x08def"), "abcdef");
        assert_eq!(shown(b"XXXXXXXXsecond12\rfirst12"), "first12Xsecond12");
        assert_eq!(shown(b"\ragentsup | warning: x"), "agentsup | warning: x");
        assert_eq!(shown(b"\x08\x08ab"), "ab");
    }

    #[test]
    fn other_controls_are_removed_and_text_kept() {
        assert_eq!(shown(b"a\0b\x07c\x7fd\te"), "abcd\te");
        assert_eq!(shown("héllo \u{1F600}".as_bytes()), "héllo \u{1F600}");
        assert_eq!(shown(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn needs_render_finds_every_special_byte() {
        for at in [0, 5, 7, 8, 13, 19] {
            for b in 0u8..=255 {
                let mut line = b"0123456789abcdefghij".to_vec();
                line[at] = b;
                assert_eq!(needs_render(&line), special(b), "byte {b:#x} at {at}");
            }
            for c in ['\u{80}', '\u{9b}', '\u{9f}', '\u{a0}', 'é', '\u{1F600}'] {
                let mut line = "0123456789abcdefghij".to_string();
                line.insert(at, c);
                let c1 = ('\u{80}'..='\u{9f}').contains(&c);
                assert_eq!(needs_render(line.as_bytes()), c1, "{c:?} at {at}");
            }
        }
        assert!(!needs_render("plain text\twith tab é".as_bytes()));
        assert_eq!(render_str("a\x1b[1mb\nc\0d"), "ab\ncd");
    }
}
