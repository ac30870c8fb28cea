//! The forms of a secret value that are redacted: the value as a program might
//! print it after encoding it one of the usual ways.
//!
//! Each form is either [`Kind::Exact`] (only the whole form is a secret) or
//! [`Kind::Run`] (any run of [`RUN_LEN`] or more consecutive bytes of it is, so
//! `key[:24]` or `key[-20:]` is caught too). Which is which:
//!
//! - A single-line value of [`RUN_LEN`] bytes or more: the value, its trimmed form
//!   and every encoding of them are runs.
//! - A multi-line value (a PEM key): each line of [`RUN_LEN`] bytes or more, except
//!   the `-----BEGIN …-----` armour, is a run with its encodings, because output is
//!   framed per line; the whole value and its encodings are exact.
//! - A value shorter than [`RUN_LEN`]: its forms are exact, and it gets no base64
//!   or hex form (a few bytes of base64 would match ordinary text).
//! - A value over [`FULL_FORMS_MAX`] bytes: only itself and its trimmed form, exact,
//!   so that memory stays a couple of bytes per secret byte (issue 13).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};

/// Values (and forms) shorter than this many bytes are not redacted: redacting
/// `true` or `8080` everywhere would mangle ordinary output and reveal the value
/// by its gaps.
pub const MIN_SECRET_LEN: usize = 8;

/// Any run of this many consecutive bytes of a [`Kind::Run`] form is redacted.
/// Shorter pieces are not: a worker that prints a key in pieces shorter than this
/// (or one character per line) is not caught.
pub(crate) const RUN_LEN: usize = 16;

/// Values longer than this get only their raw and trimmed forms.
pub(crate) const FULL_FORMS_MAX: usize = 8 * 1024;

/// How a form is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Only the whole form.
    Exact,
    /// Any run of at least [`RUN_LEN`] bytes of it (so the whole form too).
    Run,
}

/// Every form of `value` (each at least [`MIN_SECRET_LEN`] bytes), deduplicated;
/// empty for a value shorter than [`MIN_SECRET_LEN`].
pub(crate) fn forms(value: &str) -> Vec<(Vec<u8>, Kind)> {
    let mut out: Vec<(Vec<u8>, Kind)> = Vec::new();
    if value.len() < MIN_SECRET_LEN {
        return out;
    }
    let trimmed = value.trim();
    let wholes: &[&str] = if trimmed == value {
        &[value]
    } else {
        &[value, trimmed]
    };
    if value.len() > FULL_FORMS_MAX {
        out.extend(wholes.iter().map(|w| (w.as_bytes().to_vec(), Kind::Exact)));
    } else if trimmed.contains('\n') {
        for whole in wholes {
            push_encodings(&mut out, whole, Kind::Exact);
        }
        for line in trimmed.split('\n').map(str::trim) {
            if line.len() >= RUN_LEN && !is_armour(line) {
                push_encodings(&mut out, line, Kind::Run);
            }
        }
    } else {
        for whole in wholes {
            let kind = if whole.len() >= RUN_LEN {
                Kind::Run
            } else {
                Kind::Exact
            };
            push_encodings(&mut out, whole, kind);
        }
    }
    out.retain(|(f, _)| f.len() >= MIN_SECRET_LEN);
    // One entry per byte string; a run covers the exact form of the same bytes.
    out.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    out.dedup_by(|later, earlier| later.0 == earlier.0);
    out
}

/// `-----BEGIN RSA PRIVATE KEY-----` and the like: the same in every key.
fn is_armour(line: &str) -> bool {
    line.len() > 10 && line.starts_with("-----") && line.ends_with("-----")
}

/// `text` and its encodings, all of `kind`. Base64 and hex only for texts of
/// [`RUN_LEN`] bytes or more.
fn push_encodings(out: &mut Vec<(Vec<u8>, Kind)>, text: &str, kind: Kind) {
    let bytes = text.as_bytes();
    let mut add = |form: Vec<u8>| out.push((form, kind));
    add(bytes.to_vec());
    // json.dumps (ensure_ascii: `\u00e9`), JSON.stringify and serde_json (raw UTF-8).
    add(json_escape(text, true));
    add(json_escape(text, false));
    // Python's repr of a str and of bytes (httpx logs `b'Bearer <key>\n'`).
    add(repr_escape(bytes, false));
    add(repr_escape(bytes, true));
    for keep in [KEEP_RFC3986, KEEP_PATH, KEEP_JS] {
        for hex in [UPPER, LOWER] {
            add(percent_encode(bytes, keep, hex, false));
            if bytes.contains(&b' ') {
                add(percent_encode(bytes, keep, hex, true));
            }
        }
    }
    if bytes.len() >= RUN_LEN {
        push_base64(out, bytes, kind);
        out.push((hex(bytes, LOWER), kind));
        out.push((hex(bytes, UPPER), kind));
        // Separated hex (`bytes.hex(":")`, fingerprints `AB:CD:…`, `xxd`-like
        // spacing). Colon-separated, the usual one, is a run like plain hex; the
        // others are matched whole: each form costs index memory per byte (three
        // text bytes per secret byte here), and a whole form costs a fixed few.
        for (sep, sep_kind) in [(b':', kind), (b'-', Kind::Exact), (b' ', Kind::Exact)] {
            for digits in [LOWER, UPPER] {
                // Lower-case spaced hex is what dump tools print (`od -An -tx1`,
                // `hexdump -C`, 8 or 16 bytes a line): a run too, so a line of a
                // dump is caught as a piece.
                let sep_kind = if sep == b' ' && digits == LOWER {
                    kind
                } else {
                    sep_kind
                };
                out.push((hex_separated(bytes, digits, sep), sep_kind));
            }
        }
        // `xxd`'s hex column: lower-case, a space every two bytes (`736b 2d70`),
        // counted from the start of the dump, so the value may begin a group or
        // sit one byte into one. Both alignments are runs: each dump line is a
        // 16-byte piece.
        out.push((hex_grouped(bytes, 2, 0), kind));
        out.push((hex_grouped(bytes, 2, 1), kind));
        // The base64 of a JSON body holds the value JSON-escaped (`json.dumps`
        // writes `\u00e9` for `é`, `\"` for `"`), not the value's own bytes: the
        // escaped text's base64, when escaping changed it (issue 12, red-team F).
        // Whole: such a body holds the whole escaped value, and the value's own
        // base64 runs still catch the stretches escaping left alone.
        for ascii in [true, false] {
            let escaped = zeroize::Zeroizing::new(json_escape(text, ascii));
            if escaped[..] != *bytes {
                push_base64(out, &escaped, Kind::Exact);
            }
        }
    }
}

/// Base64 of `bytes` (standard and URL-safe, padded) and its three cores, the
/// forms it takes inside a longer base64 string, in both alphabets.
fn push_base64(out: &mut Vec<(Vec<u8>, Kind)>, bytes: &[u8], kind: Kind) {
    out.push((STANDARD.encode(bytes).into_bytes(), kind));
    out.push((URL_SAFE.encode(bytes).into_bytes(), kind));
    for align in 0..3 {
        let core = base64_core(bytes, align);
        out.push((url_safe(&core), kind));
        out.push((core, kind));
    }
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

/// Bytes kept as they are by a percent-encoder, besides ASCII letters and digits.
/// RFC 3986's unreserved set (`quote(s, safe="")`, `quote_plus`).
const KEEP_RFC3986: &[u8] = b"-._~";
/// Python's `urllib.parse.quote` default (`safe="/"`).
const KEEP_PATH: &[u8] = b"-._~/";
/// JavaScript's `encodeURIComponent`.
const KEEP_JS: &[u8] = b"-._~!*'()";

/// Percent-encodes every byte except ASCII letters, digits and `keep`; with
/// `plus`, a space becomes `+` (`quote_plus`, form encoding).
pub(crate) fn percent_encode(bytes: &[u8], keep: &[u8], hex: &[u8; 16], plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// The inside of a JSON string holding `text`: `\"`, `\\`, `\n`-style escapes and
/// `\u00XX` for other control characters; with `ascii`, every non-ASCII char as
/// `\uXXXX` (a surrogate pair above U+FFFF), as Python's `json.dumps` does.
pub(crate) fn json_escape(text: &str, ascii: bool) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// The body of Python's `repr` of the value: `\n`, `\r`, `\t`, `\\`, other control
/// bytes as `\xNN`, and, for a `bytes` repr, non-ASCII bytes as `\xNN` too.
pub(crate) fn repr_escape(bytes: &[u8], escape_non_ascii: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    LOWER[usize::from(b >> 4)],
                    LOWER[usize::from(b & 15)],
                ]);
            }
            0x80..=0xff if escape_non_ascii => {
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    LOWER[usize::from(b >> 4)],
                    LOWER[usize::from(b & 15)],
                ]);
            }
            _ => out.push(b),
        }
    }
    out
}

/// Hex of every byte (`bytes.hex()`, `xxd -p`).
pub(crate) fn hex(bytes: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|&b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
}

/// Lower-case hex in groups of `group` bytes joined by a space, the first group
/// `skip` bytes short (`xxd`'s layout when the value starts `skip` bytes into a
/// group).
pub(crate) fn hex_grouped(bytes: &[u8], group: usize, skip: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for (i, &b) in bytes.iter().enumerate() {
        if i > 0 && (i + skip) % group == 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&[LOWER[usize::from(b >> 4)], LOWER[usize::from(b & 15)]]);
    }
    out
}

/// Hex of every byte with `sep` between bytes (`bytes.hex(":")`).
pub(crate) fn hex_separated(bytes: &[u8], digits: &[u8; 16], sep: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for (i, &b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.extend_from_slice(&[digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
    }
    out
}

/// The base64 characters that depend on `bytes` alone when they follow `align`
/// other bytes (mod 3) in a longer encoded string, and are followed by more.
/// With the three alignments, base64 of any text holding the value contains one
/// of these three cores.
pub(crate) fn base64_core(bytes: &[u8], align: usize) -> Vec<u8> {
    let mut padded = vec![0u8; align];
    padded.extend_from_slice(bytes);
    let encoded = STANDARD_NO_PAD.encode(&padded);
    // Character i carries bits [6i, 6i + 6); the value's are [8 align, 8 (align + len)).
    let first = (8 * align).div_ceil(6);
    let end = (8 * (align + bytes.len())) / 6;
    let core = encoded.as_bytes()[first..end.max(first)].to_vec();
    // `padded` held the value; wipe it (zeroize is for what outlives a call).
    zeroize::Zeroize::zeroize(&mut padded);
    core
}

/// Standard base64 → URL-safe alphabet.
pub(crate) fn url_safe(b64: &[u8]) -> Vec<u8> {
    b64.iter()
        .map(|&c| match c {
            b'+' => b'-',
            b'/' => b'_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[(Vec<u8>, Kind)], form: &[u8]) -> Option<Kind> {
        forms.iter().find(|(f, _)| f == form).map(|(_, k)| *k)
    }

    #[test]
    fn short_value_has_exact_forms_and_no_base64() {
        let f = forms("pa ss/w+rd");
        assert_eq!(has(&f, b"pa ss/w+rd"), Some(Kind::Exact));
        assert_eq!(has(&f, b"pa%20ss/w%2Brd"), Some(Kind::Exact));
        assert_eq!(has(&f, b"pa+ss%2Fw%2Brd"), Some(Kind::Exact));
        assert!(
            f.iter()
                .all(|(b, _)| b != STANDARD.encode("pa ss/w+rd").as_bytes())
        );
        assert!(forms("1234567").is_empty());
    }

    #[test]
    fn long_value_forms_are_runs() {
        let v = "sk-proj-ab\"c\\déf/ghi+jkl mno";
        let f = forms(v);
        for form in [
            v.as_bytes().to_vec(),
            br#"sk-proj-ab\"c\\d\u00e9f/ghi+jkl mno"#.to_vec(),
            r#"sk-proj-ab\"c\\déf/ghi+jkl mno"#.as_bytes().to_vec(),
            b"sk-proj-ab%22c%5Cd%C3%A9f/ghi%2Bjkl%20mno".to_vec(),
            b"sk-proj-ab%22c%5cd%c3%a9f%2fghi%2bjkl+mno".to_vec(),
            STANDARD.encode(v).into_bytes(),
            URL_SAFE.encode(v).into_bytes(),
            hex(v.as_bytes(), LOWER),
            hex(v.as_bytes(), UPPER),
            hex_separated(v.as_bytes(), LOWER, b':'),
            hex_separated(v.as_bytes(), UPPER, b':'),
        ] {
            assert_eq!(
                has(&f, &form),
                Some(Kind::Run),
                "{}",
                String::from_utf8_lossy(&form)
            );
        }
        for form in [
            hex_separated(v.as_bytes(), LOWER, b'-'),
            hex_separated(v.as_bytes(), UPPER, b' '),
            // base64 of json.dumps's escaping (`\u00e9`, `\"`) and of
            // JSON.stringify's (`\"` only), whole and inside a longer text.
            STANDARD.encode(json_escape(v, true)).into_bytes(),
            URL_SAFE.encode(json_escape(v, false)).into_bytes(),
            base64_core(&json_escape(v, true), 2),
        ] {
            assert_eq!(
                has(&f, &form),
                Some(Kind::Exact),
                "{}",
                String::from_utf8_lossy(&form)
            );
        }
        assert_eq!(hex_separated(b"sk-\xff", LOWER, b':'), b"73:6b:2d:ff");
    }

    #[test]
    fn plain_ascii_value_gets_no_escaped_base64() {
        let v = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
        // raw, base64, hex, separated hex and xxd's grouped hex (two
        // alignments); nothing for JSON escaping, which leaves this value as it is.
        let mut expected = vec![(v.as_bytes().to_vec(), Kind::Run)];
        push_base64(&mut expected, v.as_bytes(), Kind::Run);
        expected.sort();
        expected.dedup();
        let f = forms(v);
        assert_eq!(f.len(), expected.len() + 2 + 6 + 2);
        assert!(expected.iter().all(|e| f.contains(e)));
        let accented = format!("{v}\u{e9}");
        let b64 = STANDARD.encode(json_escape(&accented, true)).into_bytes();
        assert_eq!(has(&forms(&accented), &b64), Some(Kind::Exact));
    }

    #[test]
    fn base64_cores_are_inside_any_embedding() {
        let v = b"0123456789abcdefXYZ";
        for prefix in 0..6 {
            for suffix in 0..4 {
                let mut text = vec![b'#'; prefix];
                text.extend_from_slice(v);
                text.extend(std::iter::repeat_n(b'!', suffix));
                let enc = STANDARD.encode(&text);
                let core = base64_core(v, prefix % 3);
                assert!(core.len() >= 20);
                assert!(
                    enc.as_bytes().windows(core.len()).any(|w| w == core),
                    "prefix {prefix} suffix {suffix}"
                );
            }
        }
    }

    #[test]
    fn pem_lines_are_runs_and_armour_is_not_a_form() {
        let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
        let v =
            format!("-----BEGIN PRIVATE KEY-----\n{body}\nZm9vYmFy\n-----END PRIVATE KEY-----\n");
        let f = forms(&v);
        assert_eq!(has(&f, body.as_bytes()), Some(Kind::Run));
        assert_eq!(has(&f, v.as_bytes()), Some(Kind::Exact));
        assert_eq!(has(&f, &json_escape(&v, true)), Some(Kind::Exact));
        assert_eq!(has(&f, b"-----BEGIN PRIVATE KEY-----"), None);
        // Short lines are not forms of their own.
        assert_eq!(has(&f, b"Zm9vYmFy"), None);
    }

    #[test]
    fn huge_value_has_raw_and_trimmed_only() {
        let v = format!("{}\n", "x".repeat(FULL_FORMS_MAX + 1));
        let f = forms(&v);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|(_, k)| *k == Kind::Exact));
    }

    #[test]
    fn json_escape_matches_python() {
        assert_eq!(
            json_escape("a\u{1}\u{1F600}é", true),
            br"a\u0001\ud83d\ude00\u00e9".to_vec()
        );
        assert_eq!(
            json_escape("a\u{1}é\u{7f}", false),
            "a\\u0001é\u{7f}".as_bytes().to_vec()
        );
    }
}
