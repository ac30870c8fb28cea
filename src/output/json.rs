//! The JSON line record of `--log-format json`: the `ts` clock, the constant fields of
//! a pipe, and the escaping of the line.
//!
//! Written by hand rather than through serde because it runs once per worker line,
//! the hot path of JSON output. The bytes are exactly those serde_json wrote for the
//! old derived `LineRecord` (key order, escaping, U+FFFD for invalid UTF-8); the tests
//! keep that record as a reference and compare byte for byte. Supervisor events are
//! rare and stay on serde ([`super::format`]).
use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::LineMeta;

/// Appends one line record for an already redacted `line`. `fields` is
/// [`push_json_fields`] for `meta`, cached per pipe; empty means compute it here.
pub(super) fn push_line_record(
    out: &mut Vec<u8>,
    clock: &mut LineClock,
    fields: &[u8],
    meta: &LineMeta,
    line: &[u8],
    partial: bool,
) {
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(clock.text());
    if fields.is_empty() {
        push_json_fields(out, meta);
    } else {
        out.extend_from_slice(fields);
    }
    push_json_lossy(out, line);
    out.extend_from_slice(if partial {
        b"\",\"partial\":true}\n".as_slice()
    } else {
        b"\"}\n".as_slice()
    });
}

/// Appends the JSON fields of a line record from just after the `ts` value to just
/// inside the `line` string, in the order and spelling serde gave them.
pub(super) fn push_json_fields(out: &mut Vec<u8>, meta: &LineMeta) {
    out.extend_from_slice(b"\",\"worker\":");
    // serde_json for the name: any escaping it needs is then done exactly as before.
    let _ = serde_json::to_writer(&mut *out, &*meta.worker);
    let _ = write!(
        out,
        ",\"replica\":{},\"pid\":{},\"stream\":\"{}\",\"line\":\"",
        meta.replica,
        meta.pid,
        meta.stream.as_str()
    );
}

/// Width of `ts`: `2026-11-23T11:32:00.123Z`. humantime writes no other width (it
/// refuses years past 9999).
const TS_LEN: usize = 24;

/// The `ts` of a pipe's JSON records. The clock is read at most once per
/// [`LineClock::tick`] and the RFC 3339 text rebuilt only when the millisecond
/// changed: per line, the clock read and the date format were about a tenth of
/// `--log-format json`'s time.
#[derive(Debug, Clone)]
pub(super) struct LineClock {
    /// False until the clock is read after a `tick`.
    fresh: bool,
    /// The millisecond since the epoch that `text` shows.
    millis: Option<u128>,
    text: [u8; TS_LEN],
    /// Bytes of `text` in use: `TS_LEN`, or 0 if the time could not be formatted.
    len: usize,
}

impl LineClock {
    /// A clock that reads the time for its first record.
    pub(super) fn new() -> Self {
        LineClock {
            fresh: false,
            millis: None,
            text: [0; TS_LEN],
            len: 0,
        }
    }

    /// Makes the next record read the clock again. A pump calls this once per read
    /// from its pipe, so the lines of one read share one time.
    pub(super) fn tick(&mut self) {
        self.fresh = false;
    }

    /// The current `ts` text (JSON-safe, no quotes).
    fn text(&mut self) -> &[u8] {
        if !self.fresh {
            self.set(SystemTime::now());
        }
        &self.text[..self.len]
    }

    /// Shows `time`, formatting only if its millisecond is not the one shown.
    fn set(&mut self, time: SystemTime) {
        self.fresh = true;
        // A clock before 1970 is shown as 1970 (humantime would panic on it).
        let time = time.max(UNIX_EPOCH);
        let millis = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        if self.millis == Some(millis) {
            return;
        }
        let mut buf = TsBuf {
            buf: &mut self.text,
            len: 0,
        };
        // fmt::Write, not io::Write: humantime's refusal past year 9999 is a
        // fmt::Error, on which io::Write's `write!` panics.
        self.len = match fmt::Write::write_fmt(
            &mut buf,
            format_args!("{}", humantime::format_rfc3339_millis(time)),
        ) {
            Ok(()) => buf.len,
            Err(_) => 0, // an empty `ts` rather than a lost line
        };
        self.millis = Some(millis);
    }
}

/// Formats into a [`LineClock`]'s array; fails rather than truncate.
struct TsBuf<'a> {
    buf: &'a mut [u8; TS_LEN],
    len: usize,
}

impl fmt::Write for TsBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// How serde_json escapes each byte in a string: 0 for not at all, `u` for
/// `\u00XX`, else the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `line` as the contents of a JSON string, each invalid UTF-8 sequence as
/// U+FFFD: the bytes serde_json wrote for the old `Lossy` wrapper.
fn push_json_lossy(out: &mut Vec<u8>, line: &[u8]) {
    if std::str::from_utf8(line).is_ok() {
        push_json_escaped(out, line);
        return;
    }
    for chunk in line.utf8_chunks() {
        push_json_escaped(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

/// True if any of the 8 bytes of `word` is `"`, `\` or below 0x20. Exact for "any"
/// (the borrows of these bit tricks only spoil bytes above a real match), and
/// bytes from 0x80 up never match, so UTF-8 text passes a word at a time.
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGH != 0
}

/// Appends `text` (valid UTF-8) JSON-escaped exactly as serde_json does, copying
/// the runs that need no escape whole and testing them 8 bytes at a time.
fn push_json_escaped(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len());
    let mut run_start = 0;
    let mut i = 0;
    while i < text.len() {
        while let Some(word) = text[i..].first_chunk::<8>() {
            if word_needs_escape(u64::from_le_bytes(*word)) {
                break;
            }
            i += 8;
        }
        // The word that matched (or the short tail), a byte at a time.
        let end = (i + 8).min(text.len());
        while i < end {
            let byte = text[i];
            let escape = ESCAPE[usize::from(byte)];
            if escape != 0 {
                out.extend_from_slice(&text[run_start..i]);
                if escape == b'u' {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(byte >> 4)],
                        HEX[usize::from(byte & 0xf)],
                    ]);
                } else {
                    out.extend_from_slice(&[b'\\', escape]);
                }
                run_start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&text[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_support::{config, meta};
    use crate::output::{Format, LineFormatter, Stream};

    #[test]
    fn json_line_shape() {
        let fmt = LineFormatter::new(&config(Format::Json, 0, &[]));
        let mut out = Vec::new();
        let m = meta("planner", 1, Stream::Stderr);
        fmt.write_line(&mut out, &fmt.prefix(&m), &m, b"he said \"hi\" \xff", false);
        fmt.write_line(&mut out, &[], &m, b"piece", true);
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(
            obj.keys().map(String::as_str).collect::<Vec<_>>(),
            ["line", "pid", "replica", "stream", "ts", "worker"]
        );
        assert_eq!(v["worker"], "planner");
        assert_eq!(v["replica"], 1);
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "he said \"hi\" \u{FFFD}");
        let ts = v["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-23T11:32:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        humantime::parse_rfc3339(ts).unwrap();
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(v["partial"], true);
    }

    /// The JSON line record as serde_json wrote it before the hand-written path,
    /// kept verbatim as the reference the new path must match byte for byte.
    mod reference {
        use std::fmt;
        use std::time::SystemTime;

        use serde::{Serialize, Serializer};

        use crate::output::LineMeta;
        use crate::output::format::Timestamp;

        struct Lossy<'a>(&'a [u8]);

        impl fmt::Display for Lossy<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for chunk in self.0.utf8_chunks() {
                    f.write_str(chunk.valid())?;
                    if !chunk.invalid().is_empty() {
                        f.write_str("\u{FFFD}")?;
                    }
                }
                Ok(())
            }
        }

        impl Serialize for Lossy<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match std::str::from_utf8(self.0) {
                    Ok(text) => s.serialize_str(text),
                    Err(_) => s.collect_str(self),
                }
            }
        }

        #[derive(Serialize)]
        struct LineRecord<'a> {
            ts: Timestamp,
            worker: &'a str,
            replica: u32,
            pid: u32,
            stream: &'static str,
            line: Lossy<'a>,
            #[serde(skip_serializing_if = "is_false")]
            partial: bool,
        }

        fn is_false(b: &bool) -> bool {
            !*b
        }

        pub(super) fn line(
            time: SystemTime,
            meta: &LineMeta,
            line: &[u8],
            partial: bool,
        ) -> Vec<u8> {
            let record = LineRecord {
                ts: Timestamp(time),
                worker: &meta.worker,
                replica: meta.replica,
                pid: meta.pid,
                stream: meta.stream.as_str(),
                line: Lossy(line),
                partial,
            };
            let mut out = serde_json::to_vec(&record).unwrap();
            out.push(b'\n');
            out
        }
    }

    /// Lines that exercise every escaping rule at every offset within a word.
    fn tricky_lines() -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"plain ascii, nothing to escape at all".to_vec(),
            b"\"".to_vec(),
            b"\\".to_vec(),
            b"\"\\\"\\".to_vec(),
            br#"{"nested":"json \"with\" escapes\\n"}"#.to_vec(),
            b"C:\\path\\to\\file\ttab\r\n".to_vec(),
            b"\x7f del is not escaped \x7f".to_vec(),
            "caf\u{e9} \u{4e2d}\u{6587} \u{1F600} \u{2028}\u{2029} \u{FFFD}".into(),
            "\u{e9}\"\u{e9}\\\u{e9}\n".as_bytes().to_vec(),
            b"\xff".to_vec(),
            b"bad \xff\xfe utf-8 \xc3 cut \xe2\x82 cut \xed\xa0\x80 surrogate \xc0\xaf overlong"
                .to_vec(),
            b"ends mid-char \xf0\x9f\x98".to_vec(),
            b"\xc3\"\xc3\\\xc3\x01".to_vec(),
            (0u8..0x20).collect(),
            (0u8..=0xff).collect(),
            (0u8..=0x7f).rev().collect(),
        ];
        // Every byte alone, and at each offset of a 17-byte run so that it lands in
        // every lane of the word test and in the short tail.
        for byte in 0u8..=0xff {
            lines.push(vec![byte]);
            for offset in 0..17 {
                let mut line = vec![b'x'; 17];
                line[offset] = byte;
                lines.push(line);
            }
        }
        // Neighbours that could fool the bit tricks (borrows between lanes).
        for a in [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xdc,
            0xff,
        ] {
            for b in [0x00, 0x1f, 0x20, 0x22, 0x5c, 0x80, 0xff] {
                lines.push([a, b].repeat(9));
            }
        }
        // Long lines: clean, sparse escapes, dense escapes, long UTF-8 runs.
        lines.push(vec![b'a'; crate::output::MAX_LINE]);
        let mut sparse = vec![b'y'; 1 << 20];
        for i in (0..sparse.len()).step_by(4099) {
            sparse[i] = [b'"', b'\\', b'\n', 0x01, 0x1f][i % 5];
        }
        lines.push(sparse);
        lines.push(b"\"\\\x00\n".repeat(20_000));
        lines.push("\u{e9}\u{4e2d}\u{1F600}".repeat(30_000).into_bytes());
        let mut cut = "\u{4e2d}".repeat(50_000).into_bytes();
        cut.truncate(cut.len() - 1);
        lines.push(cut);
        lines
    }

    /// The new path, with the clock pinned to `time`.
    fn new_line(
        fmt: &LineFormatter,
        prefix: &[u8],
        time: SystemTime,
        meta: &LineMeta,
        line: &[u8],
        partial: bool,
    ) -> Vec<u8> {
        let mut clock = LineClock::new();
        clock.set(time);
        let mut out = b"before".to_vec();
        fmt.write_line_at(&mut out, prefix, meta, line, partial, &mut clock);
        out.split_off(b"before".len())
    }

    #[test]
    fn json_line_is_byte_identical_to_serde() {
        let fmt = LineFormatter::new(&config(Format::Json, 0, &[]));
        let time = UNIX_EPOCH + std::time::Duration::new(1_795_433_520, 123_456_789);
        let metas = [
            meta("planner", 1, Stream::Stderr),
            meta("w", 0, Stream::Stdout),
            LineMeta {
                worker: "odd \"name\" \\ \u{e9}\u{1}".into(),
                replica: u32::MAX,
                pid: u32::MAX,
                stream: Stream::Stdout,
            },
        ];
        for m in &metas {
            let prefix = fmt.prefix(m);
            for line in tricky_lines() {
                for partial in [false, true] {
                    let want = reference::line(time, m, &line, partial);
                    for p in [&prefix[..], &[]] {
                        let got = new_line(&fmt, p, time, m, &line, partial);
                        assert!(
                            got == want,
                            "line {:?}\n got {}\nwant {}",
                            &line[..line.len().min(64)],
                            String::from_utf8_lossy(&got[..got.len().min(300)]),
                            String::from_utf8_lossy(&want[..want.len().min(300)]),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn escaping_matches_serde_json_for_every_byte_pair() {
        // Valid UTF-8 strings: every pair of ASCII bytes, and each with a 2-byte char.
        let mut text = String::new();
        for a in 0u8..0x80 {
            for b in 0u8..0x80 {
                text.clear();
                text.push(char::from(a));
                text.push(char::from(b));
                text.push('\u{e9}');
                text.push(char::from(a));
                let mut got = Vec::new();
                push_json_escaped(&mut got, text.as_bytes());
                let want = serde_json::to_vec(&text).unwrap();
                assert_eq!(got, want[1..want.len() - 1], "{text:?}");
            }
        }
    }

    #[test]
    fn word_test_agrees_with_the_table() {
        // Each lane of the word alone, against every other lane's worst neighbours.
        for byte in 0u8..=0xff {
            for lane in 0..8 {
                for fill in [0x20u8, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
                    let mut word = [fill; 8];
                    word[lane] = byte;
                    let want = word.iter().any(|&b| ESCAPE[usize::from(b)] != 0);
                    assert_eq!(
                        word_needs_escape(u64::from_le_bytes(word)),
                        want,
                        "{word:02x?}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn json_line_matches_serde_for_any_bytes(
            line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            partial in proptest::prelude::any::<bool>(),
        ) {
            let fmt = LineFormatter::new(&config(Format::Json, 0, &[]));
            let m = meta("planner", 2, Stream::Stdout);
            let time = SystemTime::now();
            let want = reference::line(time, &m, &line, partial);
            let got = new_line(&fmt, &fmt.prefix(&m), time, &m, &line, partial);
            proptest::prop_assert_eq!(got, want);
        }

        #[test]
        fn json_line_matches_serde_for_any_text(
            text in "(?s)[\"\\\\\\x00-\\x1f\\x7f a-z\u{e9}\u{4e2d}\u{1F600}]{0,200}",
        ) {
            let fmt = LineFormatter::new(&config(Format::Json, 0, &[]));
            let m = meta("w", 0, Stream::Stderr);
            let time = SystemTime::now();
            let want = reference::line(time, &m, text.as_bytes(), false);
            let got = new_line(&fmt, &[], time, &m, text.as_bytes(), false);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn clock_formats_like_humantime_once_per_millisecond() {
        let base = UNIX_EPOCH + std::time::Duration::new(1_795_433_520, 999_000_000);
        let mut clock = LineClock::new();
        for nanos in [0, 1, 999_999, 1_000_000, 1_500_000, 2_000_000, 999_999_999] {
            for extra_secs in [0, 1, 86_399, 86_400 * 366] {
                let t = base + std::time::Duration::new(extra_secs, nanos);
                clock.set(t);
                let want = humantime::format_rfc3339_millis(t).to_string();
                assert_eq!(clock.text(), want.as_bytes(), "{t:?}");
            }
        }
        // Same millisecond: the text is reused, and still right.
        clock.set(base + std::time::Duration::from_nanos(100));
        let first = clock.text().to_vec();
        clock.set(base + std::time::Duration::from_nanos(999_999));
        assert_eq!(clock.text(), first);
        assert_eq!(first, b"2026-11-23T11:32:00.999Z");
        // Before 1970 and after 9999: no panic, no lost line.
        clock.set(UNIX_EPOCH - std::time::Duration::from_secs(5));
        assert_eq!(clock.text(), b"1970-01-01T00:00:00.000Z");
        clock.set(UNIX_EPOCH + std::time::Duration::from_secs(300_000_000_000));
        assert_eq!(clock.text(), b"");
    }

    #[test]
    fn clock_is_read_once_per_tick() {
        let mut clock = LineClock::new();
        let first = clock.text().to_vec();
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert_eq!(clock.text(), first, "no tick, no new clock read");
        clock.tick();
        assert_ne!(clock.text(), first);
        humantime::parse_rfc3339(std::str::from_utf8(&first).unwrap()).unwrap();
    }
}
