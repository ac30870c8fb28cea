//! Unit tests of `dotenv` (kept apart: the module itself stays readable).

use super::*;
use proptest::prelude::*;

fn one(input: &str) -> DotenvRecord {
    let p = parse(input.as_bytes());
    assert!(p.errors.is_empty(), "unexpected errors: {:?}", p.errors);
    assert_eq!(p.records.len(), 1, "records: {:?}", p.records);
    p.records.into_iter().next().unwrap()
}

fn value(input: &str) -> String {
    one(input).value.expose().to_owned()
}

fn errors(input: &str) -> Vec<DotenvError> {
    parse(input.as_bytes()).errors
}

#[test]
fn plain_records_and_line_numbers() {
    let p = parse(b"# comment\n\nA=1\n  B = two words  \nexport C=3\n");
    let got: Vec<_> = p
        .records
        .iter()
        .map(|r| (r.key.as_str(), r.value.expose(), r.line))
        .collect();
    assert_eq!(got, [("A", "1", 3), ("B", "two words", 4), ("C", "3", 5)]);
    assert!(p.errors.is_empty());
    assert!(!p.bom);
}

#[test]
fn export_alone_is_a_key() {
    assert_eq!(one("export=x").key, "export");
    assert_eq!(one("export\t K=1").key, "K");
}

#[test]
fn unquoted_comments_and_hashes() {
    assert_eq!(value("A=abc # c"), "abc");
    assert_eq!(value("A=abc\t# c"), "abc");
    let r = one("A=abc#def");
    assert_eq!(r.value.expose(), "abc#def");
    assert_eq!(r.notes, [RecordNote::UnquotedHash]);
    assert_eq!(value("A=   # c"), "");
    assert_eq!(value("A= #"), "");
    let r = one("A=#abc");
    assert_eq!(r.value.expose(), "#abc");
    assert_eq!(r.notes, [RecordNote::UnquotedHash]);
}

#[test]
fn unquoted_is_literal() {
    assert_eq!(value(r"A=x\ny"), r"x\ny");
    assert_eq!(value(r#"A=say "hi""#), r#"say "hi""#);
    assert_eq!(value("A=it's"), "it's");
    let r = one("A=`x`");
    assert_eq!(r.value.expose(), "`x`");
    assert_eq!(r.notes, [RecordNote::Backtick]);
}

#[test]
fn trailing_whitespace_is_noted_only_when_dropped_at_line_end() {
    assert_eq!(one("A=v  ").notes, [RecordNote::UnquotedTrailingWhitespace]);
    assert!(one("A=v  # c").notes.is_empty());
    assert!(one("A=   ").notes.is_empty());
    assert!(one("A='v  '").notes.is_empty());
}

#[test]
fn double_quote_escapes() {
    assert_eq!(
        value(r#"A="n\n r\r t\t b\\ q\" d\$ s\'""#),
        "n\n r\r t\t b\\ q\" d$ s'"
    );
    let r = one(r#"A="C:\Users\x""#);
    assert_eq!(r.value.expose(), r"C:\Users\x");
    assert_eq!(r.notes, [RecordNote::UnknownEscape]);
}

#[test]
fn single_quotes_are_literal() {
    assert_eq!(value(r"A='a\nb\$c\\'"), r"a\nb\$c\\");
    let r = one("A='p$ss'");
    assert_eq!(r.value.expose(), "p$ss");
    assert_eq!(r.notes, [RecordNote::ContainsDollar]);
    assert_eq!(r.quote, Quote::Single);
}

#[test]
fn quoted_then_comment() {
    assert_eq!(value(r#"A="a#b" # c"#), "a#b");
    assert_eq!(value(r##"A="a#b"#c"##), "a#b");
    assert_eq!(value("A='x'   "), "x");
}

#[test]
fn multi_line_values_keep_line_of_key() {
    let p = parse(b"A=1\nPEM=\"-----BEGIN\nabc\n-----END\"\nB='x\r\ny'\r\nC=3\n");
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let pem = p.get("PEM").unwrap();
    assert_eq!(pem.value.expose(), "-----BEGIN\nabc\n-----END");
    assert_eq!(pem.line, 2);
    assert_eq!(pem.notes, [RecordNote::MultiLine]);
    let b = p.get("B").unwrap();
    assert_eq!(b.value.expose(), "x\ny");
    assert_eq!(b.line, 5);
    assert_eq!(
        b.notes,
        [RecordNote::CrlfInsideQuotes, RecordNote::MultiLine]
    );
    assert_eq!(p.get("C").unwrap().line, 7);
}

#[test]
fn crlf_and_lone_cr() {
    assert_eq!(value("A=b\r\n"), "b");
    assert_eq!(value("A=b\r"), "b");
    // A CR that is not a line end is content, for `check` to flag.
    assert_eq!(value("A=b\rc\n"), "b\rc");
}

#[test]
fn control_characters_are_kept() {
    assert_eq!(value("A=a\0b\x07c"), "a\0b\x07c");
    assert_eq!(value("A='\u{feff}x'"), "\u{feff}x");
}

#[test]
fn bom_is_stripped_and_reported() {
    let p = parse(b"\xEF\xBB\xBFA=1\n");
    assert!(p.bom);
    assert_eq!(p.records[0].key, "A");
    assert!(p.errors.is_empty());
}

#[test]
fn utf16_is_one_clear_error() {
    let e = errors("\u{feff}");
    assert!(e.is_empty());
    let p = parse(&[0xFF, 0xFE, b'A', 0, b'=', 0]);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].reason.contains("UTF-16"));
}

#[test]
fn duplicates_last_wins_and_effective_order() {
    let p = parse(b"A=1\nB=2\nA=3\nC=4\nA=5\n");
    assert_eq!(
        p.duplicates,
        [
            Duplicate {
                key: "A".into(),
                first_line: 1,
                line: 3
            },
            Duplicate {
                key: "A".into(),
                first_line: 1,
                line: 5
            },
        ]
    );
    let eff: Vec<_> = p
        .effective()
        .map(|r| (r.key.as_str(), r.value.expose()))
        .collect();
    assert_eq!(eff, [("B", "2"), ("C", "4"), ("A", "5")]);
    assert_eq!(p.get("A").unwrap().line, 5);
    assert_eq!(p.records.len(), 5);
}

#[test]
fn no_expansion_ever() {
    // PATH and HOME are set in any test environment; they must not leak in.
    assert_eq!(value("A=$PATH"), "$PATH");
    assert_eq!(value("A=\"${HOME}x\""), "${HOME}x");
    assert_eq!(value("A=abc$$def"), "abc$$def");
    assert_eq!(value("A=\"pa$sw0rd\""), "pa$sw0rd");
}

#[test]
fn key_errors() {
    let e = errors("OPEN-AI_KEY=sk-secret\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key.as_deref(), Some("OPEN-AI_KEY"));
    assert!(e[0].reason.contains("`OPEN_AI_KEY`"), "{}", e[0].reason);
    assert!(!e[0].to_string().contains("secret"));

    for (input, reason) in [
        ("1KEY=v", "starts with a digit"),
        ("MY KEY=v", "contains a space"),
        ("=v", "no name before"),
        ("K\u{e9}=v", "not allowed"),
        ("a+b/c=", "not allowed"),
    ] {
        let e = errors(input);
        assert_eq!(e.len(), 1, "{input}");
        assert_eq!(e[0].line, 1);
        assert_eq!(e[0].key, None, "{input}");
        assert!(e[0].reason.contains(reason), "{input}: {}", e[0].reason);
    }
    // A BOM at the start of the file is stripped; one further down (files joined
    // with `cat`) is part of the name.
    let e = errors("A=1\n\u{feff}K=v");
    assert_eq!((e.len(), e[0].line), (1, 2));
    assert!(e[0].reason.contains("byte order mark"));
}

#[test]
fn missing_equals() {
    let e = errors("A=1\nsk-live-12345\nB=2");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 2);
    assert_eq!(e[0].key, None);
    assert!(!e[0].to_string().contains("12345"));
    let e = errors("OPENAI_API_KEY: sk-1");
    assert_eq!(e[0].key.as_deref(), Some("OPENAI_API_KEY"));
    assert!(e[0].reason.contains("YAML"));
    // `user:pass` is not YAML-shaped, and the user name is not echoed.
    assert_eq!(errors("admin:hunter2")[0].key, None);
}

#[test]
fn unterminated_quote_reports_opening_line_and_recovers() {
    let p = parse(b"A=1\nK=\"sk-abc\nB=2\nC='x\n");
    let keys: Vec<_> = p.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["A", "B"]);
    assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
    assert_eq!(
        (p.errors[0].line, p.errors[0].key.as_deref()),
        (2, Some("K"))
    );
    assert!(p.errors[0].reason.contains("unterminated double quote"));
    assert_eq!(
        (p.errors[1].line, p.errors[1].key.as_deref()),
        (4, Some("C"))
    );
    assert!(p.errors[1].reason.contains("unterminated single quote"));
    for e in &p.errors {
        assert!(!e.to_string().contains("sk-abc"));
    }
}

#[test]
fn quote_closed_on_a_later_line_with_junk_recovers() {
    // K's quote is missing; B's opening quote closes it.
    let p = parse(b"K=\"sk-abc\nB=\"two\"\n");
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(p.errors[0].line, 1);
    assert!(p.errors[0].reason.contains("closes on line 2"));
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].value.expose(), "two");
}

#[test]
fn text_after_closing_quote() {
    let e = errors(r"A='it\'s'");
    assert_eq!(e.len(), 1);
    assert!(e[0].reason.contains("single quotes have no escapes"));
    assert_eq!(e[0].key.as_deref(), Some("A"));
}

#[test]
fn bad_key_with_multi_line_value_skips_the_value() {
    let p = parse(b"MY-KEY=\"l1\nl2\"\nB=1\n");
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].key, "B");
}

#[test]
fn bad_key_and_bad_quote_are_both_reported() {
    let p = parse(b"MY-KEY=\"l1\nB=1\n");
    assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
    assert_eq!(p.records.len(), 1);
}

#[test]
fn non_utf8_names_the_line_and_drops_the_record() {
    let p = parse(b"A=1\nB=caf\xe9\n# \xff comment\nC=\"x\n\xfe\"\nD=4\n");
    let keys: Vec<_> = p.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["A", "D"]);
    let got: Vec<_> = p
        .errors
        .iter()
        .map(|e| (e.line, e.key.as_deref()))
        .collect();
    assert_eq!(got, [(2, Some("B")), (3, None), (5, Some("C"))]);
    for e in &p.errors {
        assert!(e.reason.contains("UTF-8"));
        assert!(!e.to_string().contains('\u{fffd}'));
    }
}

#[test]
fn display_forms() {
    let e = DotenvError {
        line: 3,
        key: Some("K".into()),
        reason: "r".into(),
    };
    assert_eq!(e.to_string(), "line 3: K: r");
    let e = DotenvError {
        line: 4,
        key: None,
        reason: "r".into(),
    };
    assert_eq!(e.to_string(), "line 4: r");
}

#[test]
fn empty_input() {
    assert_eq!(parse(b""), ParsedDotenv::default());
    assert_eq!(parse(b"\n\n# x\n").records.len(), 0);
}

// ---- properties ----

fn key_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}"
}

/// Parses with dotenvy 0.15.7's iterator (never its env-mutating loaders).
fn dotenvy_pairs(input: &str) -> Vec<Result<(String, String), ()>> {
    dotenvy::from_read_iter(input.as_bytes())
        .map(|r| r.map_err(|_| ()))
        .collect()
}

proptest! {
    /// Any value without `'` (and without CR, which a CRLF would eat) survives
    /// single quoting, including NUL, `$`, `#`, backslashes and newlines.
    #[test]
    fn single_quoted_round_trip(pairs in prop::collection::vec((key_strategy(), "[^'\r]*"), 0..8)) {
        let file: String = pairs.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
        let p = parse(file.as_bytes());
        prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
        let got: Vec<_> = p.records.iter().map(|r| (r.key.clone(), r.value.expose().to_owned())).collect();
        prop_assert_eq!(got, pairs);
    }

    /// Any value at all survives double quoting with `\\`, `\"`, `\r` escaped.
    #[test]
    fn double_quoted_round_trip(pairs in prop::collection::vec((key_strategy(), any::<String>()), 0..8)) {
        let file: String = pairs
            .iter()
            .map(|(k, v)| {
                let esc = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\r', "\\r");
                format!("export {k} = \"{esc}\" # note\r\n")
            })
            .collect();
        let p = parse(file.as_bytes());
        prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
        let got: Vec<_> = p.records.iter().map(|r| (r.key.clone(), r.value.expose().to_owned())).collect();
        prop_assert_eq!(got, pairs);
    }

    /// Unquoted values with inner spaces come back trimmed and whole.
    #[test]
    fn unquoted_round_trip(k in key_strategy(), v in "[!-~&&[^#'\"]]([ -~&&[^#]]{0,20}[!-~&&[^#]])?") {
        let p = parse(format!("{k}={v}").as_bytes());
        prop_assert!(p.errors.is_empty());
        prop_assert_eq!(p.records[0].value.expose(), v.as_str());
    }

    /// Nothing panics, and every line number points into the file.
    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let p = parse(&bytes);
        let lines = bytes.split(|&b| b == b'\n').count();
        for r in &p.records {
            prop_assert!(r.line >= 1 && r.line <= lines);
            prop_assert!(is_valid_key(&r.key));
        }
        for e in &p.errors {
            prop_assert!(e.line >= 1 && e.line <= lines);
        }
    }

    /// Errors and Debug output never contain a value, however mangled the file.
    #[test]
    fn errors_never_contain_the_value(
        secret in "zq[a-z0-9]{10}",
        lines in prop::collection::vec((
            prop::sample::select(vec!["A", "OPEN-AI_KEY", "1K", "MY KEY", "", "export B", "C."]),
            prop::sample::select(vec!["=", " = ", ": ", "", "=  ", ":"]),
            // `S` stands for the secret, `X` for a byte that is not UTF-8.
            prop::sample::select(vec!["S", "'S", "\"S", "'S'x", "\"S\" y", "S'", "\"a\nS", "S #c", "'\\'S'", "\"S\\", "SX", "\"SX\"", "'S\r\nS'"]),
        ), 1..8),
    ) {
        let mut file: Vec<u8> = Vec::new();
        for (k, sep, v) in &lines {
            file.extend_from_slice(k.as_bytes());
            file.extend_from_slice(sep.as_bytes());
            for c in v.replace('S', &secret).bytes() {
                file.push(if c == b'X' { 0xFF } else { c });
            }
            file.push(b'\n');
        }
        let p = parse(&file);
        for e in &p.errors {
            prop_assert!(!e.to_string().contains(&secret), "{}", e);
            prop_assert!(!e.to_string().contains("zq"), "{}", e);
        }
        let debug = format!("{:?}", p);
        prop_assert!(!debug.contains(&secret));
    }

    /// On simple `$`-free inputs the two parsers agree record for record.
    #[test]
    fn agrees_with_dotenvy(
        recs in prop::collection::vec((
            key_strategy(),
            prop::sample::select(vec!["", "export ", "  "]),
            prop::sample::select(vec!["=", " = ", "= "]),
            prop_oneof![
                "[A-Za-z0-9_./:+@%,-]{0,16}",
                "[ -~&&[^'\\\\$]]{0,16}".prop_map(|v| format!("'{v}'")),
                "[ -~&&[^\"\\\\$]]{0,16}".prop_map(|v| format!("\"{v}\"")),
                "[A-Za-z0-9 ]{0,8}\n[A-Za-z0-9 ]{0,8}".prop_map(|v| format!("\"{v}\"")),
            ],
            prop::sample::select(vec!["", " # comment", "   "]),
        ), 0..8),
        blank in prop::sample::select(vec!["", "\n", "# c\n", "\r\n"]),
    ) {
        let mut file = String::from(blank);
        for (k, prefix, eq, v, tail) in &recs {
            file.push_str(&format!("{prefix}{k}{eq}{v}{tail}\n"));
        }
        let ours: Vec<Result<(String, String), ()>> = parse(file.as_bytes())
            .records
            .iter()
            .map(|r| Ok((r.key.clone(), r.value.expose().to_owned())))
            .collect();
        prop_assert_eq!(ours, dotenvy_pairs(&file), "file: {:?}", file);
    }
}
