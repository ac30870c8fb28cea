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
//! - Unicode's default-ignorable characters (zero-width space, soft hyphen, word
//!   joiner, BOM, bidi embeddings, overrides and isolates, variation selectors,
//!   tags, …), which a terminal shows as nothing: removed ([`invisible`]), except
//!   where legitimate text needs them: a joiner (ZWJ, ZWNJ, LRM, RLM, …) between
//!   two visible non-ASCII characters (emoji ZWJ sequences, Indic and Arabic
//!   scripts), and a modifier (variation selector, tag) after a non-ASCII
//!   character or before a keycap;
//! - tab and everything printable: kept.
//!
//! Cursor moves inside CSI sequences are not followed: the result holds no control
//! at all, so whatever it is, the terminal shows exactly it.
//!
//! Removing the invisible characters matters for redaction (a key printed in
//! pieces joined by U+200B shows whole) and for log forging: bidi overrides
//! (U+202E, "Trojan Source") would let a worker's line display in an order other
//! than its bytes'. What is kept between non-ASCII characters can still split a
//! non-ASCII value at such a place.

/// True when `line` holds a byte this module would change: a C0 control other
/// than tab, DEL, a C1 control in UTF-8 (`C2 80`..`C2 9F`), or an [`invisible`]
/// character. A word at a time, because almost every line is plain ASCII: per
/// byte, `(b & 0x7f) + 1` is below 0x21 exactly for C0, DEL and the bytes
/// 0x80..0x9F and 0xFF, and any other non-ASCII byte has its top bit set; a word
/// with either gets the exact test.
pub(crate) fn needs_render(line: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = line.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let word = u64::from_le_bytes(chunk);
        // Each byte of `x` is at most 0x80, so the "byte below n" test is exact.
        let x = ((word & LOW7) + ONES) & LOW7;
        if (x.wrapping_sub(ONES * 0x21) & !x | word) & HIGH != 0 && special_in(line, i, i + 8) {
            return true;
        }
        i += 8;
    }
    special_in(line, i, line.len())
}

/// Exact test of `line[from..to]`: a C0 control other than tab, DEL, the second
/// byte of a C1 control (whose `C2` lead may be before `from`), or the lead byte
/// of an [`invisible`] character (whose other bytes may be past `to`).
fn special_in(line: &[u8], from: usize, to: usize) -> bool {
    (from..to).any(|j| {
        let b = line[j];
        special(b)
            || ((0x80..=0x9f).contains(&b) && j > 0 && line[j - 1] == 0xc2)
            || (may_lead_invisible(b) && char_at(line, j).is_some_and(|c| invisible(c).is_some()))
    })
}

/// The UTF-8 lead bytes of every [`invisible`] character (U+00AD, U+034F,
/// U+061C, U+1xxx, U+20xx, U+3164, U+FExx/U+FFxx, U+1BCAx/U+1D17x, U+E0xxx).
fn may_lead_invisible(b: u8) -> bool {
    matches!(
        b,
        0xc2 | 0xcd | 0xd8 | 0xe1 | 0xe2 | 0xe3 | 0xef | 0xf0 | 0xf3
    )
}

/// The char whose UTF-8 encoding starts at `line[j]`, if valid.
fn char_at(line: &[u8], j: usize) -> Option<char> {
    let len = match line[j] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    std::str::from_utf8(line.get(j..j + len)?)
        .ok()?
        .chars()
        .next()
}

/// How [`render`] treats an invisible character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invisible {
    /// Always removed: nothing legitimate needs it in a log line, and a bidi
    /// control can reorder what a terminal shows.
    Drop,
    /// Kept between two visible non-ASCII characters (a ZWJ emoji sequence, a
    /// ZWNJ in Persian, an LRM in Hebrew text), removed elsewhere: between ASCII
    /// characters it can only split a word or a key.
    Joiner,
    /// Kept after a non-ASCII character, whose look it changes (an emoji's
    /// variation selector, a flag's tags), or before a keycap (`1\u{FE0F}\u{20E3}`);
    /// removed elsewhere.
    Modifier,
}

/// Unicode's `Default_Ignorable_Code_Point` set (DerivedCoreProperties.txt,
/// stable since Unicode 6.3): characters a terminal shows as nothing. Written out
/// because it is a short table no crate in the tree exposes, and the classes
/// below are agentsup's own.
pub(crate) fn invisible(c: char) -> Option<Invisible> {
    use Invisible::{Drop, Joiner, Modifier};
    Some(match u32::from(c) {
        0x00ad => Drop,                                    // soft hyphen
        0x034f => Modifier,                                // combining grapheme joiner
        0x061c => Joiner,                                  // Arabic letter mark
        0x115f..=0x1160 | 0x3164 | 0xffa0 => Joiner,       // Hangul fillers
        0x17b4..=0x17b5 => Modifier,                       // Khmer inherent vowels
        0x180b..=0x180d | 0x180f => Modifier,              // Mongolian variation selectors
        0x180e => Joiner,                                  // Mongolian vowel separator
        0x200b => Drop,                                    // zero-width space
        0x200c..=0x200f => Joiner,                         // ZWNJ, ZWJ, LRM, RLM
        0x202a..=0x202e => Drop,                           // bidi embeddings, overrides
        0x2060..=0x206f => Drop,                           // word joiner, isolates, …
        0xfe00..=0xfe0f => Modifier,                       // variation selectors
        0xfeff => Drop,                                    // BOM, zero-width no-break space
        0xfff0..=0xfff8 => Drop,                           // unassigned, ignorable
        0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a => Drop,     // shorthand, musical format
        0xe0020..=0xe007f | 0xe0100..=0xe01ef => Modifier, // tags, variation selectors
        0xe0000..=0xe0fff => Drop,                         // language tag, unassigned
        _ => return None,
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
        // The next visible char after a run of invisible ones, cached so a long
        // run is scanned once, not once per char.
        let mut ahead = Ahead::default();
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
                        let shown = match invisible(c) {
                            None => true,
                            Some(kind) => {
                                let after_non_ascii =
                                    cursor > 0 && line[cells[cursor - 1].0 as usize] >= 0x80;
                                let text = chunk.valid();
                                let mut next = || next_visible(text, end - base, &mut ahead);
                                match kind {
                                    Invisible::Drop => false,
                                    Invisible::Joiner => {
                                        after_non_ascii && next().is_some_and(|n| !n.is_ascii())
                                    }
                                    Invisible::Modifier => {
                                        after_non_ascii || next() == Some('\u{20e3}')
                                    }
                                }
                            }
                        };
                        if !shown {
                        } else if invisible(c).is_some()
                            && cursor > 0
                            && cells[cursor - 1].1 as usize == start
                        {
                            // A kept joiner or modifier takes no column: it
                            // joins the cell of the char before it, so a
                            // backspace steps over both, as on a terminal.
                            cells[cursor - 1].1 = end as u32;
                        } else {
                            put(&mut cells, &mut cursor, start, end);
                        }
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

/// Where the last look-ahead of [`render`] stopped and what it found there.
#[derive(Default)]
struct Ahead {
    /// Offset in the chunk of the first visible char found (or the chunk's end).
    at: usize,
    found: Option<char>,
}

/// The first char of `text[from..]` that is not [`invisible`], `None` at the end
/// of `text` (the end of the line, or of a valid UTF-8 stretch of it: an edge).
fn next_visible(text: &str, from: usize, ahead: &mut Ahead) -> Option<char> {
    if ahead.at < from {
        let rest = &text[from..];
        let hit = rest.char_indices().find(|(_, c)| invisible(*c).is_none());
        *ahead = match hit {
            Some((k, c)) => Ahead {
                at: from + k,
                found: Some(c),
            },
            None => Ahead {
                at: text.len(),
                found: None,
            },
        };
    }
    ahead.found
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

    /// The invisible characters, by class, that the tests join pieces with.
    const DROPPED: &[char] = &[
        '\u{ad}',
        '\u{200b}',
        '\u{2060}',
        '\u{2061}',
        '\u{2063}',
        '\u{feff}',
        '\u{202a}',
        '\u{202b}',
        '\u{202c}',
        '\u{202d}',
        '\u{202e}',
        '\u{2066}',
        '\u{2067}',
        '\u{2068}',
        '\u{2069}',
        '\u{206f}',
        '\u{fff0}',
        '\u{1bca0}',
        '\u{1d173}',
        '\u{e0001}',
    ];
    const JOINERS: &[char] = &[
        '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{61c}', '\u{180e}', '\u{3164}',
        '\u{ffa0}', '\u{115f}',
    ];
    const MODIFIERS: &[char] = &[
        '\u{fe0f}',
        '\u{fe00}',
        '\u{34f}',
        '\u{180b}',
        '\u{17b4}',
        '\u{e0041}',
        '\u{e007f}',
        '\u{e0100}',
    ];

    #[test]
    fn invisible_characters_between_ascii_are_removed() {
        for &c in DROPPED.iter().chain(JOINERS).chain(MODIFIERS) {
            let line = format!("sk-proj-Ab3d{c}Ef6hIj9kLm2n{c}{c}Op5q {c}x{c}");
            assert_eq!(
                shown(line.as_bytes()),
                "sk-proj-Ab3dEf6hIj9kLm2nOp5q x",
                "{c:?}"
            );
            assert!(needs_render(line.as_bytes()), "{c:?}");
            // At the very start and end of the line too.
            assert_eq!(shown(format!("{c}ab{c}").as_bytes()), "ab", "{c:?}");
        }
        // A run of mixed ones, and ones beside escape sequences and a CR.
        assert_eq!(
            shown("ab\u{200d}\u{fe0f}\u{200b}\u{e0041}cd\x1b[0m\u{200d}ef\r\u{200d}g".as_bytes()),
            "gbcdef"
        );
        assert_eq!(invisible('a'), None);
        assert_eq!(invisible('\u{a0}'), None);
        assert_eq!(invisible('\u{20e3}'), None);
    }

    #[test]
    fn bidi_controls_go_even_between_non_ascii() {
        for &c in DROPPED {
            assert_eq!(
                shown(format!("שלום{c}עולם").as_bytes()),
                "שלוםעולם",
                "{c:?}"
            );
        }
        // Trojan Source: what the bytes say is what is shown.
        assert_eq!(
            shown("access = \u{202e}\u{2066}user\u{2069}\u{2066}".as_bytes()),
            "access = user"
        );
    }

    #[test]
    fn legitimate_unicode_text_is_kept() {
        for text in [
            "family \u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467} done",
            "fire heart \u{2764}\u{fe0f}\u{200d}\u{1f525}!",
            "heart \u{2764}\u{fe0f} ok",
            "keycap 1\u{fe0f}\u{20e3} ok",
            "flag \u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f} ok",
            "Hindi \u{915}\u{94d}\u{200d}\u{937}",
            "Persian \u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}",
            "Hebrew \u{5e9}\u{200f}\u{5dc}",
            "plain é and \u{1f600} and 漢字",
        ] {
            assert_eq!(shown(text.as_bytes()), text);
            let mut scratch = Vec::new();
            assert_eq!(render_slice(text.as_bytes(), &mut scratch), text.as_bytes());
        }
        // A kept joiner takes no column: two backspaces step back over
        // `é` ZWJ `é` whole, so what follows shows right after the `1`.
        assert_eq!(
            shown("KEYPART1\u{e9}\u{200d}\u{e9}\x08\x08KEYPART2".as_bytes()),
            "KEYPART1KEYPART2"
        );
        // A joiner needs visible non-ASCII on both sides.
        assert_eq!(shown("\u{1f468}\u{200d}x".as_bytes()), "\u{1f468}x");
        assert_eq!(shown("x\u{200d}\u{1f468}".as_bytes()), "x\u{1f468}");
        assert_eq!(
            shown("\u{1f468}\u{200d}\u{200b}\u{1f469}".as_bytes()),
            "\u{1f468}\u{200d}\u{1f469}"
        );
    }

    #[test]
    fn a_long_run_of_invisible_characters_renders_in_linear_time() {
        let line = "\u{200d}".repeat(200_000) + "\u{1f468}";
        let start = std::time::Instant::now();
        assert_eq!(shown(line.as_bytes()), "\u{1f468}");
        let line = "\u{1f468}".to_string() + &"\u{200d}".repeat(200_000) + "\u{1f469}";
        assert_eq!(shown(line.as_bytes()).chars().count(), 200_002);
        // Quadratic would be 4e10 steps; linear is a few milliseconds.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
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
        for &c in DROPPED.iter().chain(JOINERS).chain(MODIFIERS) {
            for at in [0, 5, 7, 8, 13, 20] {
                let mut line = "0123456789abcdefghij".to_string();
                line.insert(at, c);
                assert!(needs_render(line.as_bytes()), "{c:?} at {at}");
            }
        }
        assert!(!needs_render("plain text\twith tab é".as_bytes()));
        assert_eq!(render_str("a\x1b[1mb\nc\0d"), "ab\ncd");
    }
}
