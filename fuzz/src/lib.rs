//! Helpers shared by the fuzz targets: planted values and a leak check.
//!
//! A *planted* value is a string the target puts where a secret may stand (a dotenv
//! value, a `vars` value, a JSON source field). Each is `Zq<n>_<middle>_qZ`, where
//! the middle never holds `Z` or `q`: no planted value can then be built from
//! pieces of another, nor from the fixed text of a message, so finding one in an
//! error is a real echo, never a coincidence.

use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// Characters a planted middle is drawn from: letters and digits plus everything
/// that needs quoting or escaping somewhere (quotes, backslash, `$`, `#`, `=`,
/// blanks, control characters, non-ASCII).
const MIDDLE: &[char] = &[
    'a', 'b', 'c', 'k', 's', 'x', '0', '1', '9', '-', '_', '.', '/', '+', ' ', '\t', '"', '\'',
    '\\', '$', '#', '=', ':', ',', '[', ']', '{', '}', '`', '%', '\u{0}', '\u{1b}', '\u{7f}', 'é',
    '€', '\u{feff}', '😀',
];

/// A new planted value, number `n`. `newlines` allows `\n` and `\r` in the middle.
pub fn planted(u: &mut Unstructured<'_>, n: usize, newlines: bool) -> Result<String> {
    // At least 9 bytes: values under the redactor's minimum (8) are not redacted.
    let len = u.int_in_range(2..=24)?;
    let mut s = format!("Zq{n}_");
    for _ in 0..len {
        if newlines && u.ratio(1, 12)? {
            s.push(*u.choose(&['\n', '\r'])?);
        } else {
            s.push(*u.choose(MIDDLE)?);
        }
    }
    s.push_str("_qZ");
    Ok(s)
}

/// Arbitrary text that can never hold a planted value (no `Zq`).
pub fn unplanted(u: &mut Unstructured<'_>) -> Result<String> {
    let s: String = u.arbitrary()?;
    Ok(s.replace("Zq", "zq"))
}

/// The first planted value that `text` shows, raw or in the escaped forms a message
/// would print it in (Rust `{:?}`, JSON).
pub fn leaked<'a>(text: &str, planted: &'a [String]) -> Option<&'a str> {
    planted.iter().map(String::as_str).find(|p| {
        if text.contains(p) {
            return true;
        }
        let debug = format!("{p:?}");
        let json = serde_json::to_string(p).unwrap_or_default();
        text.contains(&debug[1..debug.len() - 1]) || text.contains(&json[1..json.len() - 1])
    })
}
