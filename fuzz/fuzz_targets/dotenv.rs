//! dotenv parser (src/sources/dotenv.rs).
//!
//! - any bytes: no panic, every record and error points at a line of the file;
//! - a value written back quoted (by `agentsup env --format dotenv`'s writer and by
//!   a plain double-quoted writer escaping everything the parser knows) parses to
//!   itself;
//! - a planted value after a line's `=` never shows in any error (key or reason).
#![no_main]

use agentsup::fuzzing::dotenv_quote;
use agentsup::sources::dotenv::{is_valid_key, parse};
use agentsup_fuzz::{leaked, planted, unplanted};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw(rest),
        1 => {
            let _ = round_trip(&mut Unstructured::new(rest));
        }
        _ => {
            let _ = planted_values(&mut Unstructured::new(rest));
        }
    }
});

fn raw(bytes: &[u8]) {
    let p = parse(bytes);
    let lines = bytes.split(|&b| b == b'\n').count().max(1);
    for r in &p.records {
        assert!(is_valid_key(&r.key), "record with an invalid key");
        assert!(
            (1..=lines).contains(&r.line),
            "record line {} of {lines}",
            r.line
        );
    }
    for e in &p.errors {
        assert!(
            (1..=lines).contains(&e.line),
            "error line {} of {lines}",
            e.line
        );
        assert!(!e.reason.is_empty());
    }
    for d in &p.duplicates {
        assert!(d.first_line < d.line);
    }
}

/// The double-quoted form with every escape the parser reads.
fn double_quoted(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '$' => s.push_str("\\$"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let value: String = u.arbitrary()?;
    let prefix = *u.choose(&["", "export ", "  "])?;
    let layout = u.int_in_range(0..=2)?;
    for written in [dotenv_quote(&value), double_quoted(&value)] {
        let file = match layout {
            0 => format!("# written back\n{prefix}KEY={written}\nOTHER=1\n"),
            1 => format!("# written back\r\n{prefix}KEY={written}\r\nOTHER=1\r\n"),
            _ => format!("OTHER=1\n{prefix}KEY={written}"),
        };
        let p = parse(file.as_bytes());
        assert!(
            p.errors.is_empty(),
            "{written:?} gave errors {:?}",
            p.errors
        );
        let got = p.get("KEY").map(|r| r.value.expose().to_owned());
        assert_eq!(
            got.as_deref(),
            Some(value.as_str()),
            "written as {written:?}"
        );
        assert!(
            p.get("OTHER").is_some(),
            "the other record was lost next to {written:?}"
        );
        assert_eq!(p.records.len(), 2);
    }
    Ok(())
}

fn planted_values(u: &mut Unstructured<'_>) -> Result<()> {
    let mut secrets = Vec::new();
    let mut file = String::new();
    let n = u.int_in_range(1..=12)?;
    for i in 0..n {
        if u.ratio(1, 2)? {
            let filler = unplanted(u)?;
            file.push_str(&filler);
        } else {
            // Text before `=` has no line break, so the planted value always
            // follows the first `=` of its line: it is in value position.
            let key = unplanted(u)?.replace(['\n', '='], "");
            // A quote opened a line earlier puts the value on the next line; it
            // starts with `x ` there, because a quote that never closes makes the
            // parser resume at that line, where text before `=` is a key.
            let open = *u.choose(&["", "'", "\"", " \"", "\"x\\", "'#", "\"\nx "])?;
            let secret = planted(u, i, false)?;
            let close = unplanted(u)?;
            file.push_str(&format!("{key}={open}{secret}{close}"));
            secrets.push(secret);
        }
        file.push_str(*u.choose(&["\n", "\r\n", "\n\n"])?);
    }
    // A planted value made of filler (a `Zq` across two pieces) cannot be told
    // from a key: only count values that appear where they were put.
    let p = parse(file.as_bytes());
    for e in &p.errors {
        let shown = format!("{e} {:?}", e.key);
        if let Some(s) = leaked(&shown, &secrets) {
            panic!(
                "error on line {} shows planted value {s:?}: {shown}",
                e.line
            );
        }
    }
    for d in &p.duplicates {
        assert!(
            leaked(&d.key, &secrets).is_none(),
            "duplicate key shows a value"
        );
    }
    Ok(())
}
