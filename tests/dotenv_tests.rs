//! The dotenv dialect, one test per row of `docs/dotenv.md` (`row_NN_*` for the 36
//! cases of `reference/secrets.md` Part B, `extra_*` for agentsup's own decisions).
//! These call the parser directly: the table documents the parser, and a failing row
//! should point at it, not at the CLI around it.

use agentsup::sources::dotenv::{
    DotenvError, DotenvRecord, Duplicate, ParsedDotenv, Quote, RecordNote, parse,
};

/// Parses text that must yield exactly one record and no error.
fn only(input: &str) -> DotenvRecord {
    let p = parse(input.as_bytes());
    assert!(
        p.errors.is_empty(),
        "{input:?}: unexpected errors {:?}",
        p.errors
    );
    assert_eq!(p.records.len(), 1, "{input:?}: records {:?}", p.records);
    p.records.into_iter().next().unwrap()
}

fn value(input: &str) -> String {
    only(input).value.expose().to_owned()
}

/// Parses bytes that must yield exactly one error and no record, and checks that the
/// error text holds none of `secrets` (the value, or parts of it).
fn only_error(input: &[u8], secrets: &[&str]) -> DotenvError {
    let p = parse(input);
    assert!(p.records.is_empty(), "unexpected records {:?}", p.records);
    assert_eq!(p.errors.len(), 1, "errors {:?}", p.errors);
    let e = p.errors.into_iter().next().unwrap();
    let shown = format!("{e} {e:?}");
    for s in secrets {
        assert!(!shown.contains(s), "error shows {s:?}: {shown}");
    }
    e
}

fn has_note(r: &DotenvRecord, note: RecordNote) -> bool {
    r.notes.contains(&note)
}

#[test]
fn row_01_single_quotes_keep_inner_space() {
    let r = only("A='x y'");
    assert_eq!(r.value.expose(), "x y");
    assert_eq!(r.quote, Quote::Single);
}

#[test]
fn row_02_unquoted_inner_space_is_kept() {
    assert_eq!(value("A=x y"), "x y");
    assert_eq!(value("ORG=Default Organization"), "Default Organization");
}

#[test]
fn row_03_double_quoted_backslash_n_is_a_newline() {
    let r = only(r#"A="x\ny""#);
    assert_eq!(r.value.expose(), "x\ny");
    assert_eq!(r.quote, Quote::Double);
}

#[test]
fn row_04_single_quoted_backslash_n_is_literal() {
    assert_eq!(value(r"A='x\ny'"), r"x\ny");
}

#[test]
fn row_05_unquoted_backslash_n_is_literal() {
    let r = only(r"A=x\ny");
    assert_eq!(r.value.expose(), r"x\ny");
    assert_eq!(r.quote, Quote::None);
}

#[test]
fn row_06_double_quoted_backslash_t_is_a_tab() {
    assert_eq!(value(r#"A="x\ty""#), "x\ty");
}

#[test]
fn row_07_escaped_double_quote() {
    assert_eq!(value(r#"A="say \"hi\"""#), r#"say "hi""#);
}

#[test]
fn row_08_no_escapes_in_single_quotes_is_an_error() {
    let e = only_error(br"A='it\'s'", &["it's", r"it\'s", "it\\"]);
    assert_eq!(e.line, 1);
    assert_eq!(e.key.as_deref(), Some("A"));
    assert!(e.reason.contains("after the closing single quote"), "{e}");
    assert!(e.reason.contains("use double quotes"), "{e}");
    // The same with a secret-looking value: nothing of it is shown.
    only_error(br"TOKEN='sk-zz\'q91x'", &["sk-zz", "q91x"]);
    // The suggested fix works.
    assert_eq!(value(r#"A="it's""#), "it's");
}

#[test]
fn row_09_hash_without_space_is_kept_and_noted() {
    let r = only("A=abc#def");
    assert_eq!(r.value.expose(), "abc#def");
    assert!(has_note(&r, RecordNote::UnquotedHash));
}

#[test]
fn row_10_space_hash_starts_a_comment() {
    let r = only("A=abc #def");
    assert_eq!(r.value.expose(), "abc");
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

#[test]
fn row_11_hash_inside_quotes_then_comment() {
    assert_eq!(value(r#"A="a#b" # c"#), "a#b");
}

#[test]
fn row_12_empty_value_then_comment_is_empty() {
    assert_eq!(value("A= # comment"), "");
    assert_eq!(value("FAL_KEY=   # get one at https://example.com"), "");
}

#[test]
fn row_13_unquoted_trailing_spaces_are_dropped_and_noted() {
    let r = only("A=value   ");
    assert_eq!(r.value.expose(), "value");
    assert!(has_note(&r, RecordNote::UnquotedTrailingWhitespace));
}

#[test]
fn row_14_quoted_trailing_spaces_are_kept() {
    let r = only("A=\"value  \"");
    assert_eq!(r.value.expose(), "value  ");
    assert!(r.notes.is_empty());
}

#[test]
fn row_15_crlf_line_ends_are_stripped() {
    let p = parse(b"A=b\r\nC='d'\r\nE=\"f\"\r\n");
    assert!(p.errors.is_empty());
    let got: Vec<_> = p.records.iter().map(|r| r.value.expose()).collect();
    assert_eq!(got, ["b", "d", "f"]);
}

#[test]
fn row_16_crlf_inside_multi_line_quotes_becomes_lf() {
    let r = only("A=\"l1\r\nl2\"\r\n");
    assert_eq!(r.value.expose(), "l1\nl2");
    assert!(has_note(&r, RecordNote::CrlfInsideQuotes));
}

#[test]
fn row_17_bom_is_stripped_and_reported() {
    let p = parse(b"\xEF\xBB\xBFA=1\nB=2\n");
    assert!(p.bom);
    assert!(p.errors.is_empty());
    assert_eq!(p.records[0].key, "A");
    assert_eq!(p.records[0].line, 1);
    assert!(!parse(b"A=1").bom);
}

#[test]
fn row_18_empty_value() {
    let r = only("A=");
    assert_eq!(r.value.expose(), "");
}

#[test]
fn row_19_line_without_equals_is_an_error() {
    let p = parse(b"X=1\nA\nY=2\n");
    assert_eq!(p.records.len(), 2);
    assert_eq!(p.errors.len(), 1);
    let e = &p.errors[0];
    assert_eq!((e.line, e.key.as_deref()), (2, None));
    assert!(e.reason.contains("no `=`"), "{e}");
    // A stray secret on its own line is never echoed.
    only_error(b"sk-live-zz81q", &["sk-live", "zz81q"]);
}

#[test]
fn row_20_duplicates_last_wins_and_are_reported() {
    let p = parse(b"A=1\nA=2\n");
    assert_eq!(p.records.len(), 2);
    assert_eq!(
        p.duplicates,
        [Duplicate {
            key: "A".into(),
            first_line: 1,
            line: 2
        }]
    );
    let eff: Vec<_> = p.effective().map(|r| r.value.expose()).collect();
    assert_eq!(eff, ["2"]);
    assert_eq!(p.get("A").map(|r| r.line), Some(2));
}

#[test]
fn row_21_export_prefix() {
    let r = only("export A=1");
    assert_eq!((r.key.as_str(), r.value.expose()), ("A", "1"));
}

#[test]
fn row_22_multi_line_in_both_quote_kinds() {
    let p = parse(b"A=\"l1\nl2\"\nB='l3\nl4'\nC=5\n");
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let got: Vec<_> = p
        .records
        .iter()
        .map(|r| (r.key.as_str(), r.value.expose(), r.line))
        .collect();
    assert_eq!(got, [("A", "l1\nl2", 1), ("B", "l3\nl4", 3), ("C", "5", 5)]);
    assert!(has_note(&p.records[0], RecordNote::MultiLine));
    assert!(has_note(&p.records[1], RecordNote::MultiLine));
}

#[test]
fn row_23_braced_reference_is_literal() {
    let p = parse(b"A=1\nB=${A}\nC=\"${A}\"\nD='${A}'\n");
    assert!(p.errors.is_empty());
    for key in ["B", "C", "D"] {
        let r = p.get(key).unwrap();
        assert_eq!(r.value.expose(), "${A}", "{key}");
        assert!(has_note(r, RecordNote::ContainsDollar));
    }
}

#[test]
fn row_24_unbraced_reference_is_literal() {
    let p = parse(b"A=1\nB=$A\nC=$MY_KEY\n");
    assert_eq!(p.get("B").unwrap().value.expose(), "$A");
    assert_eq!(p.get("C").unwrap().value.expose(), "$MY_KEY");
}

#[test]
fn row_25_default_syntax_is_literal() {
    assert_eq!(value("B=${X:-dflt}"), "${X:-dflt}");
}

#[test]
fn row_26_undefined_reference_is_literal() {
    assert_eq!(value("B=${NOPE}"), "${NOPE}");
}

#[test]
fn row_27_the_process_env_is_never_consulted() {
    // PATH is set in every test environment; it must not leak into the value.
    let p = parse(b"PATH=/from/file\nB=$PATH\nC=\"${PATH}\"\n");
    assert_eq!(p.get("B").unwrap().value.expose(), "$PATH");
    assert_eq!(p.get("C").unwrap().value.expose(), "${PATH}");
}

#[test]
fn row_28_dollar_before_closing_quote() {
    assert_eq!(value("B=\"x$A\""), "x$A");
    assert_eq!(value("PW=\"pa$sw0rd\""), "pa$sw0rd");
    assert_eq!(value("PW=abc$$def"), "abc$$def");
}

#[test]
fn row_29_command_substitution_is_literal() {
    assert_eq!(value("A=$(whoami)"), "$(whoami)");
}

#[test]
fn row_30_backslash_dollar() {
    assert_eq!(value(r"A=\$HOME"), r"\$HOME");
    assert_eq!(value(r#"A="\$HOME""#), "$HOME");
}

#[test]
fn row_31_dash_in_name_is_an_error_with_its_own_reason() {
    let e = only_error(b"OPEN-AI_KEY=x", &[]);
    assert_eq!((e.line, e.key.as_deref()), (1, Some("OPEN-AI_KEY")));
    assert!(e.reason.contains("contains `-`"), "{e}");
    assert!(e.reason.contains("`OPEN_AI_KEY`"), "{e}");
    only_error(b"OPEN-AI_KEY=sk-proj-zz91q", &["sk-proj", "zz91q"]);
}

#[test]
fn row_32_leading_digit_is_an_error() {
    let e = only_error(b"1KEY=sk-zz72", &["sk-zz72"]);
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("starts with a digit"), "{e}");
}

#[test]
fn row_33_space_in_name_is_an_error() {
    let e = only_error(b"MY KEY=sk-zz73", &["sk-zz73"]);
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("contains a space"), "{e}");
}

#[test]
fn row_34_yaml_style_is_an_error() {
    let e = only_error(b"A: sk-zz74", &["sk-zz74"]);
    assert_eq!((e.line, e.key.as_deref()), (1, Some("A")));
    assert!(e.reason.contains("write KEY=value"), "{e}");
}

#[test]
fn row_35_all_errors_are_collected_with_lines_and_no_values() {
    let file = b"A=1\nOPEN-AI_KEY=sk-zz01\nB='sk-zz02'x\nnot a record\nC=\"sk-zz03\nD=4\n";
    let p = parse(file);
    let keys: Vec<_> = p.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["A", "D"]);
    let got: Vec<_> = p
        .errors
        .iter()
        .map(|e| (e.line, e.key.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (2, Some("OPEN-AI_KEY")),
            (3, Some("B")),
            (4, None),
            (5, Some("C"))
        ]
    );
    for e in &p.errors {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("sk-zz"), "{shown}");
        assert!(shown.starts_with(&format!("line {}: ", e.line)), "{shown}");
    }
    assert!(!format!("{p:?}").contains("sk-zz"));
}

#[test]
fn row_36_parser_result_does_not_depend_on_the_process_env() {
    // Precedence between the file and the process env is decided by source order,
    // not by the parser: the file's value is returned as written.
    let home = std::env::var("HOME").unwrap_or_default();
    let r = only("HOME=/from/the/file");
    assert_eq!(r.value.expose(), "/from/the/file");
    assert_ne!(home, "/from/the/file");
}

#[test]
fn extra_leading_hash_is_a_value() {
    let r = only("A=#abc");
    assert_eq!(r.value.expose(), "#abc");
    assert!(has_note(&r, RecordNote::UnquotedHash));
}

#[test]
fn extra_unknown_escape_keeps_the_backslash() {
    let r = only(r#"A="C:\Users""#);
    assert_eq!(r.value.expose(), r"C:\Users");
    assert!(has_note(&r, RecordNote::UnknownEscape));
}

#[test]
fn extra_text_after_closing_quote_is_an_error() {
    let e = only_error(br#"A="sk-zz05"y"#, &["sk-zz05"]);
    assert_eq!((e.line, e.key.as_deref()), (1, Some("A")));
    assert!(e.reason.contains("after the closing double quote"), "{e}");
}

#[test]
fn extra_comment_right_after_closing_quote() {
    assert_eq!(value("A=\"x\"#c"), "x");
}

#[test]
fn extra_unterminated_quote_names_the_opening_line_and_recovers() {
    let p = parse(b"X=1\nA=\"sk-zz06\nB=2\n");
    let keys: Vec<_> = p.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["X", "B"]);
    assert_eq!(p.errors.len(), 1);
    let e = &p.errors[0];
    assert_eq!((e.line, e.key.as_deref()), (2, Some("A")));
    assert!(e.reason.contains("unterminated double quote"), "{e}");
    assert!(!e.to_string().contains("sk-zz06"));
}

#[test]
fn extra_backticks_are_kept() {
    let r = only("A=`x`");
    assert_eq!(r.value.expose(), "`x`");
    assert!(has_note(&r, RecordNote::Backtick));
}

#[test]
fn extra_nul_and_control_characters_are_kept() {
    assert_eq!(value("A=a\0b"), "a\0b");
    assert_eq!(value("A=\"a\x1bb\""), "a\x1bb");
}

#[test]
fn extra_lone_cr_is_content() {
    assert_eq!(value("A=b\rc\n"), "b\rc");
}

#[test]
fn extra_non_utf8_names_the_line_and_hides_the_bytes() {
    let p = parse(b"A=1\nKEY=sk-zz07\xff\xfe\nB=2\n");
    let keys: Vec<_> = p.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["A", "B"]);
    assert_eq!(p.errors.len(), 1);
    let e = &p.errors[0];
    assert_eq!((e.line, e.key.as_deref()), (2, Some("KEY")));
    assert!(e.reason.contains("not valid UTF-8"), "{e}");
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("sk-zz07") && !shown.contains('\u{fffd}'),
        "{shown}"
    );
}

#[test]
fn extra_utf16_file_is_one_error() {
    let bytes: Vec<u8> = "\u{feff}A=1\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let e = only_error(&bytes, &[]);
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("UTF-16"), "{e}");
}

#[test]
fn extra_bom_in_the_middle_is_an_error() {
    let p = parse("A=1\n\u{feff}K=sk-zz08\n".as_bytes());
    assert_eq!(p.errors.len(), 1);
    let e = &p.errors[0];
    assert_eq!((e.line, e.key.as_deref()), (2, None));
    assert!(e.reason.contains("byte order mark"), "{e}");
    assert!(!e.to_string().contains("sk-zz08"));
}

#[test]
fn extra_export_alone_is_a_key() {
    let r = only("export=x");
    assert_eq!(r.key, "export");
}

#[test]
fn empty_file_is_empty() {
    assert_eq!(parse(b""), ParsedDotenv::default());
}
