//! Wording of the errors serde and toml give for `supervisor.toml`, so that they
//! never echo a value and say which field is wrong.
//!
//! serde words a type error with the value in it (`invalid type: string
//! "sk-proj-…", expected i64`): a key pasted into the wrong line of the config
//! would be printed by `check`, logged by CI, and shown in a terminal. These
//! messages keep what is useful (the field, what it expects, what kind of value
//! it got, and the nearest valid name for a misspelt field or option) and drop the
//! value itself. The location (file:line:col) comes from the error's span.

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

/// The message for a deserialisation error at `span` of `text`.
pub(super) fn message(text: &str, span: Option<Range<usize>>, raw: &str) -> String {
    let field = span.as_ref().and_then(|s| field_at(text, s.start));
    let subject = field.map(|f| format!("`{f}`: ")).unwrap_or_default();
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = split_expected(rest);
        return format!(
            "{subject}expected {}, found {} (the value is not shown)",
            toml_type(expected),
            found_kind(found)
        );
    }
    if let Some(rest) = raw.strip_prefix("invalid value: ") {
        let (found, expected) = split_expected(rest);
        return format!(
            "{subject}{} out of range, expected {} (the value is not shown)",
            found_kind(found),
            toml_type(expected)
        );
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        let (given, expected) = split_expected(rest);
        let options = backticked(expected);
        return format!(
            "{subject}unknown value (not shown), expected {expected}{}",
            suggestion(given.trim_matches('`'), &options)
        );
    }
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        // Field names are the config's own words, not values: shown.
        let (given, expected) = split_expected(rest);
        let options = backticked(expected);
        let given_name = given.trim_matches('`');
        return match nearest(given_name, &options) {
            Some(best) => format!("unknown field {given}; did you mean `{best}`?"),
            None => format!("unknown field {given}, expected {expected}"),
        };
    }
    // Our own value errors (durations, signals) name the problem, not the field.
    if ["invalid duration", "duration is", "unknown signal"]
        .iter()
        .any(|p| raw.starts_with(p))
    {
        return format!("{subject}{raw}");
    }
    raw.to_string()
}

/// `"<found>, expected <expected>"`, split at the last `, expected ` (the value
/// part may itself contain those words; the expectation never does).
fn split_expected(rest: &str) -> (&str, &str) {
    match rest.rfind(", expected ") {
        Some(i) => (&rest[..i], &rest[i + ", expected ".len()..]),
        None => (rest, "another value"),
    }
}

/// The kind of value serde found, without the value: `string "…"` → `a string`.
fn found_kind(found: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a float"),
        ("boolean", "a boolean"),
        ("sequence", "an array"),
        ("map", "a table"),
        ("char", "a string"),
        ("unit", "an empty value"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| found.starts_with(prefix))
        .map_or("a value of another type", |(_, kind)| kind)
}

/// serde's expectation in TOML's words: `i64` → `an integer`, `a sequence` → `an
/// array`, `struct Backoff` → `a table`.
fn toml_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e => e.to_string(),
    }
}

/// The names between backticks in serde's list of expected names.
fn backticked(list: &str) -> Vec<&str> {
    list.split('`').skip(1).step_by(2).collect()
}

/// The valid name closest to `given`, when one is close enough to be a typo
/// (Jaro-Winkler similarity 0.8 or more, ignoring case).
pub(crate) fn nearest<'a>(given: &str, options: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    options
        .iter()
        .map(|o| (strsim::jaro_winkler(&given, &o.to_ascii_lowercase()), *o))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o)
}

/// `; did you mean `x`?` for a near miss, else nothing. Only a valid name is
/// shown, never what was given.
fn suggestion(given: &str, options: &[&str]) -> String {
    nearest(given, options)
        .map(|best| format!("; did you mean `{best}`?"))
        .unwrap_or_default()
}

/// The field a value at byte `offset` belongs to: the last `key =` before it,
/// with the table it is in (`replicas` in `[[worker]]`).
fn field_at(text: &str, offset: usize) -> Option<String> {
    static KEY: OnceLock<Regex> = OnceLock::new();
    static TABLE: OnceLock<Regex> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        Regex::new(r#"(?m)(?:^|[{,])[ \t]*([A-Za-z0-9_-]+|"[^"\n]*")[ \t]*="#).expect("valid regex")
    });
    let table = TABLE.get_or_init(|| {
        Regex::new(r"(?m)^[ \t]*(\[\[?[A-Za-z0-9_.\- ]+\]\]?)").expect("valid regex")
    });
    let before = text.get(..offset.min(text.len()))?;
    let name = key.captures_iter(before).last()?.get(1)?.as_str();
    let name = name.trim_matches('"');
    match table.captures_iter(before).last().and_then(|c| c.get(1)) {
        Some(t) => Some(format!("{name}` in `{}", t.as_str())),
        None => Some(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_expectations_in_tomls_words() {
        assert_eq!(found_kind(r#"string "sk-x", expected"#), "a string");
        assert_eq!(found_kind("floating point `1.5`"), "a float");
        assert_eq!(toml_type("u32"), "a whole number (0 or more)");
        assert_eq!(toml_type("struct Backoff"), "a table");
        assert_eq!(
            backticked("one of `always`, `on-failure`, `never`"),
            ["always", "on-failure", "never"]
        );
    }

    #[test]
    fn a_value_holding_the_words_expected_is_still_split_at_the_real_one() {
        let (found, expected) = split_expected(r#"string "a, expected b", expected i64"#);
        assert_eq!(expected, "i64");
        assert!(found.starts_with("string"));
    }

    #[test]
    fn near_misses_only() {
        assert_eq!(
            nearest("comand", &["name", "command", "cwd"]),
            Some("command")
        );
        assert_eq!(
            nearest("on_failure", &["always", "on-failure", "never"]),
            Some("on-failure")
        );
        assert_eq!(
            nearest(
                "sk-proj-abcdefghijklmnop",
                &["always", "on-failure", "never"]
            ),
            None
        );
    }

    #[test]
    fn the_field_is_the_last_key_before_the_value() {
        let text = "[[worker]]\nname = \"a\"\nbackoff = { initial = 5 }\n";
        let at = text.find('5').unwrap();
        assert_eq!(
            field_at(text, at).as_deref(),
            Some("initial` in `[[worker]]")
        );
        let text = "[supervisor]\ncommand = [\n  \"x\",\n  5,\n]\n";
        let at = text.find('5').unwrap();
        assert_eq!(
            field_at(text, at).as_deref(),
            Some("command` in `[supervisor]")
        );
    }
}
