//! Parses the bytes of a `.env` file into records, without reading or writing
//! agentsup's own process environment.
//!
//! The dialect is documented, row by row against python-dotenv and Node's dotenv,
//! in `docs/dotenv.md`. In one breath: `KEY=value` per record, optional `export `,
//! spaces around `=` allowed, unquoted values trimmed with inner spaces kept and
//! ` #` starting a comment, single quotes literal, double quotes with a few escapes,
//! both quote kinds may span lines, **no variable expansion** (`$` is literal), last
//! duplicate wins, keys are POSIX names.
//!
//! # Why a hand parser and not a dotenvy wrapper
//!
//! `reference/crates.md` §2 suggests feeding each record to
//! `dotenvy::from_read_iter`. Doing that safely needs: a record splitter that tracks
//! quotes and line numbers (that is most of a parser already), a pass that escapes
//! every `$` (dotenvy reads the supervisor's env for `$NAME`), a pass that re-quotes
//! unquoted values with inner spaces (dotenvy rejects `A=x y`, which every other
//! dialect accepts), and a mapping of dotenvy's errors, which carry the raw line.
//! dotenvy would also still reject `\t` in double quotes. Two parsers would have to
//! agree on quote rules they do not share (dotenvy's line joiner treats `\'` inside
//! single quotes as an escape, its value parser does not). That is well past the
//! ~150 lines the design allows for a wrapper, so this is a small hand parser, and
//! dotenvy stays on as a test oracle for the `$`-free inputs where the two agree.
//!
//! # Error policy
//!
//! An error names the line (1-based), the key when it is a plain name, and says what
//! is wrong and what to do. It never contains any part of a value, nor the raw line,
//! nor bytes that are not UTF-8. After an error the parser resumes at the next line
//! (or after the record, when its extent is certain), so one typo does not swallow
//! the rest of the file and every error is collected in one pass.

use std::collections::HashMap;
use std::fmt;

use crate::secret::Sensitive;

/// How a value was written in the file. Checks use it to explain findings
/// ("quoted values keep their spaces", "unquoted values are trimmed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quote {
    /// `KEY=value`: trimmed, ` #` starts a comment, everything else literal.
    None,
    /// `KEY='value'`: literal, no escapes.
    Single,
    /// `KEY="value"`: escapes `\n \r \t \\ \" \$ \'` are decoded.
    Double,
}

/// Something about a record that parsed fine but that the dialects disagree on, or
/// that hints at a mistake. The parser only records these; `check` decides whether
/// each one is a warning for the key at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordNote {
    /// An unquoted value contains `#` not preceded by whitespace (`KEY=abc#def`),
    /// or starts with one (`KEY=#abc`). agentsup keeps it; Node's dotenv cuts the
    /// value at the `#`, so a Node worker may be running on a truncated key.
    UnquotedHash,
    /// The value contains `$`. agentsup never expands it, but python-dotenv
    /// (`${X}`), dotenvy and Compose (`$X`) would, so the same file means something
    /// else to them.
    ContainsDollar,
    /// Spaces or tabs after an unquoted value were dropped (every dialect does), so a
    /// value that needed them must be quoted.
    UnquotedTrailingWhitespace,
    /// A CRLF line break inside a multi-line quoted value became a single LF.
    CrlfInsideQuotes,
    /// A backslash in a double-quoted value was not one of the known escapes and was
    /// kept with the character after it (`"C:\Users"` keeps `\U`). python-dotenv
    /// does the same for unknown escapes but decodes a few more (`\a \b \f \v`).
    UnknownEscape,
    /// A quoted value spans more than one line (PEM keys, JSON blobs).
    MultiLine,
    /// An unquoted value is wrapped in backticks. Node's dotenv strips them as
    /// quotes; agentsup and python-dotenv keep them.
    Backtick,
}

/// One `KEY=value` record that parsed cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvRecord {
    /// The name, always matching `[A-Za-z_][A-Za-z0-9_]*`.
    pub key: String,
    /// The decoded value (quotes removed, escapes applied).
    pub value: Sensitive,
    /// 1-based line of the key (a multi-line value starts here).
    pub line: usize,
    /// How the value was quoted.
    pub quote: Quote,
    /// Findings for `check`, in a fixed order, each at most once.
    pub notes: Vec<RecordNote>,
}

/// A record that could not be parsed. Built so that it can be printed anywhere:
/// it never holds any part of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    /// 1-based line: where the record starts, or the line holding bad bytes.
    pub line: usize,
    /// The key, when the record has a name that is safe to show.
    pub key: Option<String>,
    /// What is wrong and what to do, in plain words.
    pub reason: String,
}

impl fmt::Display for DotenvError {
    /// `line N: KEY: reason`, or `line N: reason` without a key. The caller prefixes
    /// the file path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "line {}: {key}: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

impl std::error::Error for DotenvError {}

/// A key set more than once in the same file. Every dialect but dotenvy's `dotenv()`
/// lets the last one win, and so does agentsup; a duplicate is still worth a warning
/// because someone editing the first line sees no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The key.
    pub key: String,
    /// 1-based line of the first occurrence.
    pub first_line: usize,
    /// 1-based line of this later occurrence (the last one is the one that counts).
    pub line: usize,
}

/// Everything learnt from one file. Parsing never fails as a whole: good records
/// and errors are both collected, and the caller decides what an error means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedDotenv {
    /// Every good record in file order, duplicates included.
    pub records: Vec<DotenvRecord>,
    /// Every error in file order.
    pub errors: Vec<DotenvError>,
    /// The file started with a UTF-8 byte order mark, which was stripped. Worth a
    /// warning: python-dotenv ≤ 1.2.2 silently loses the first key of such a file.
    pub bom: bool,
    /// Each later occurrence of a key already set, in file order.
    pub duplicates: Vec<Duplicate>,
}

impl ParsedDotenv {
    /// The records that count: for each key its **last** occurrence, yielded in file
    /// order of those last occurrences (so a key redefined at the bottom comes out at
    /// the bottom, where its winning value is).
    pub fn effective(&self) -> impl Iterator<Item = &DotenvRecord> {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, r) in self.records.iter().enumerate() {
            last.insert(r.key.as_str(), i);
        }
        self.records
            .iter()
            .enumerate()
            .filter(move |(i, r)| last.get(r.key.as_str()) == Some(i))
            .map(|(_, r)| r)
    }

    /// The effective record for `key` (its last occurrence), if any.
    pub fn get(&self, key: &str) -> Option<&DotenvRecord> {
        self.records.iter().rev().find(|r| r.key == key)
    }
}

/// Parses a whole `.env` file. Pure: reads no environment, no files, no clock.
pub fn parse(bytes: &[u8]) -> ParsedDotenv {
    let mut out = ParsedDotenv::default();

    // Windows Notepad's "Unicode" is UTF-16; every line would be a UTF-8 error, so
    // say it once.
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        out.errors.push(DotenvError {
            line: 1,
            key: None,
            reason: "the file is UTF-16 encoded (it starts with a UTF-16 byte order mark); \
                     save it as UTF-8"
                .to_owned(),
        });
        return out;
    }
    let body = match bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()) {
        Some(rest) => {
            out.bom = true;
            rest
        }
        None => bytes,
    };

    let lines = split_lines(body);
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut i = 0;
    while i < lines.len() {
        let (next, key_for_utf8, record) = match parse_record(&lines, i) {
            Step::Blank => (i + 1, None, None),
            Step::Errors { errors, resume } => {
                let key = errors.first().and_then(|e| e.key.clone());
                out.errors.extend(errors);
                (resume, key, None)
            }
            Step::Record { record, end } => (end + 1, Some(record.key.clone()), Some(record)),
        };
        // Bytes that are not UTF-8 are reported per line, never shown; a record that
        // holds them is dropped rather than passed on with replacement characters.
        let mut bad = false;
        for (n, line) in lines.iter().enumerate().take(next).skip(i) {
            if line.bad_utf8 {
                bad = true;
                out.errors.push(DotenvError {
                    line: n + 1,
                    key: key_for_utf8.clone(),
                    reason: "this line is not valid UTF-8 (the bytes are not shown); \
                             save the file as UTF-8"
                        .to_owned(),
                });
            }
        }
        if let Some(record) = record.filter(|_| !bad) {
            match first_seen.get(&record.key) {
                Some(&first_line) => out.duplicates.push(Duplicate {
                    key: record.key.clone(),
                    first_line,
                    line: record.line,
                }),
                None => {
                    first_seen.insert(record.key.clone(), record.line);
                }
            }
            out.records.push(record);
        }
        i = next;
    }
    out
}

/// One physical line, with its line end removed.
struct Line {
    /// The text; bytes that are not UTF-8 became U+FFFD, which can never be
    /// mistaken for `=`, `#` or a quote, so the structure of the file survives.
    text: String,
    /// The line held bytes that are not UTF-8.
    bad_utf8: bool,
    /// The line ended in CRLF (or a lone CR at the end of the file).
    crlf: bool,
}

/// Splits on `\n` at the byte level: `\n` never occurs inside a multi-byte UTF-8
/// sequence, so a bad byte stays confined to its own line.
fn split_lines(bytes: &[u8]) -> Vec<Line> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if bytes.ends_with(b"\n") {
        parts.pop();
    }
    parts
        .into_iter()
        .map(|raw| {
            let (raw, crlf) = match raw.strip_suffix(b"\r") {
                Some(rest) => (rest, true),
                None => (raw, false),
            };
            match std::str::from_utf8(raw) {
                Ok(s) => Line {
                    text: s.to_owned(),
                    bad_utf8: false,
                    crlf,
                },
                Err(_) => Line {
                    text: String::from_utf8_lossy(raw).into_owned(),
                    bad_utf8: true,
                    crlf,
                },
            }
        })
        .collect()
}

/// The outcome of reading one record that starts at a line index.
enum Step {
    /// A blank or comment line.
    Blank,
    /// A record; `end` is the index of its last line.
    Record { record: DotenvRecord, end: usize },
    /// One or more errors; parsing resumes at line index `resume`.
    Errors {
        errors: Vec<DotenvError>,
        resume: usize,
    },
}

/// A value read from the text after `=`.
struct Scanned {
    value: String,
    quote: Quote,
    /// Index of the line holding the end of the value.
    end: usize,
    notes: Vec<RecordNote>,
}

/// Only spaces and tabs separate tokens. Other control characters are content, so
/// that `check` can see and flag them.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn parse_record(lines: &[Line], start: usize) -> Step {
    let text = lines[start].text.as_str();
    let line = start + 1;
    let trimmed = text.trim_start_matches(is_blank);
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Step::Blank;
    }
    let Some(eq) = text.find('=') else {
        return Step::Errors {
            errors: vec![no_equals(trimmed, line)],
            resume: start + 1,
        };
    };
    let key = check_key(&text[..eq]);
    // The key shown in any error: a valid key, or a dash-name (safe, and what the
    // user will search for).
    let shown_key = match &key {
        Ok(k) => Some(k.clone()),
        Err((shown, _)) => shown.clone(),
    };
    match (key, scan_value(lines, start, &text[eq + 1..])) {
        (key, Err(reason)) => {
            // The extent of the record is unknown (a quote that never closes, or
            // closes in the wrong place): report, then retry from the next line so
            // one stray quote cannot swallow the rest of the file.
            let mut errors = Vec::new();
            if let Err((_, key_reason)) = key {
                errors.push(DotenvError {
                    line,
                    key: shown_key.clone(),
                    reason: key_reason,
                });
            }
            errors.push(DotenvError {
                line,
                key: shown_key,
                reason,
            });
            Step::Errors {
                errors,
                resume: start + 1,
            }
        }
        (Err((_, reason)), Ok(scanned)) => Step::Errors {
            errors: vec![DotenvError {
                line,
                key: shown_key,
                reason,
            }],
            // The value is well formed, so skip all of it (a multi-line value's
            // continuation lines would otherwise be misread as records).
            resume: scanned.end + 1,
        },
        (Ok(key), Ok(mut scanned)) => {
            if scanned.value.contains('$') {
                scanned.notes.push(RecordNote::ContainsDollar);
            }
            let mut notes = Vec::new();
            for note in scanned.notes {
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
            Step::Record {
                record: DotenvRecord {
                    key,
                    value: Sensitive::new(scanned.value),
                    line,
                    quote: scanned.quote,
                    notes,
                },
                end: scanned.end,
            }
        }
    }
}

/// True for `[A-Za-z_][A-Za-z0-9_]*`, the names a shell and `os.environ` handle.
pub fn is_valid_key(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Drops a shell-style `export ` prefix; a key named `export` (`export=x`) stays a
/// key, as in dotenvy. (No let-chains: the crate's MSRV is 1.85.)
fn strip_export(name: &str) -> &str {
    match name.strip_prefix("export") {
        Some(rest) if rest.starts_with(is_blank) => rest.trim_start_matches(is_blank),
        _ => name,
    }
}

/// Validates the text before `=`. On error returns the name when it is safe to show
/// (a would-be key with `-` or `.`) and the reason. Other bad names are never echoed:
/// the text before `=` may be a pasted secret (base64 ends in `=`).
fn check_key(raw: &str) -> Result<String, (Option<String>, String)> {
    let name = strip_export(raw.trim_matches(is_blank));
    if is_valid_key(name) {
        return Ok(name.to_owned());
    }
    let rule = "names must start with an ASCII letter or `_` and contain only ASCII \
                letters, digits and `_`";
    if name.is_empty() {
        return Err((
            None,
            "there is no name before `=`; write KEY=value".to_owned(),
        ));
    }
    if name.starts_with('\u{feff}') {
        return Err((
            None,
            "the name starts with an invisible byte order mark (U+FEFF), usually left \
             by joining files saved on Windows; delete it"
                .to_owned(),
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err((
            None,
            format!(
                "the name before `=` contains a space; {rule} (if the line is meant as a \
                 comment, start it with `#`)"
            ),
        ));
    }
    // Only a conventional, upper-case name is echoed back: a pasted base64 token
    // (a Fernet key, a JWT piece) also fits `[A-Za-z0-9_.-]+=`, and it is a secret.
    let looks_like_name = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        && name.contains(['_', '-', '.']);
    if looks_like_name {
        let what = match (name.contains('-'), name.contains('.')) {
            (true, true) => "`-` and `.`",
            (true, false) => "`-`",
            _ => "`.`",
        };
        let suggestion = name.replace(['-', '.'], "_");
        return Err((
            Some(name.to_owned()),
            format!(
                "the name contains {what}, which shells and os.environ[...] lookups cannot \
                 use (python-dotenv and Node's dotenv accept it, agentsup does not); rename \
                 it, e.g. to `{suggestion}`, or to the exact name your SDK reads"
            ),
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err((None, format!("the name starts with a digit; {rule}")));
    }
    Err((
        None,
        format!("the name contains a character that is not allowed; {rule}"),
    ))
}

/// The error for a line with no `=`. Never shows the line, except a would-be key in
/// the YAML form `KEY: value`, which is the one mistake worth naming.
fn no_equals(trimmed: &str, line: usize) -> DotenvError {
    if let Some((before, after)) = trimmed.split_once(':') {
        let name = strip_export(before.trim_end_matches(is_blank));
        if is_valid_key(name) && (after.is_empty() || after.starts_with(is_blank)) {
            return DotenvError {
                line,
                key: Some(name.to_owned()),
                reason: "`KEY: value` (YAML style) is not supported; write KEY=value".to_owned(),
            };
        }
    }
    DotenvError {
        line,
        key: None,
        reason: "this line has no `=`, so it is not a KEY=value record; write KEY=value, or \
                 start the line with `#` to make it a comment"
            .to_owned(),
    }
}

/// Reads the value that follows `=` on line `start`.
fn scan_value(lines: &[Line], start: usize, after_eq: &str) -> Result<Scanned, String> {
    let rest = after_eq.trim_start_matches(is_blank);
    if let Some(inner) = rest.strip_prefix('\'') {
        scan_quoted(lines, start, inner, Quote::Single)
    } else if let Some(inner) = rest.strip_prefix('"') {
        scan_quoted(lines, start, inner, Quote::Double)
    } else {
        Ok(scan_unquoted(after_eq, start))
    }
}

/// An unquoted value: up to a `#` that follows a space or tab (or the end of the
/// line), then trimmed. Everything else, backslashes, quotes and `$` included, is
/// literal.
fn scan_unquoted(after_eq: &str, start: usize) -> Scanned {
    let mut cut = after_eq.len();
    let mut prev_blank = false;
    for (i, c) in after_eq.char_indices() {
        if c == '#' && prev_blank {
            cut = i;
            break;
        }
        prev_blank = is_blank(c);
    }
    let raw = &after_eq[..cut];
    let value = raw.trim_matches(is_blank);
    let mut notes = Vec::new();
    if value.contains('#') {
        notes.push(RecordNote::UnquotedHash);
    }
    if cut == after_eq.len() && !value.is_empty() && raw.ends_with(is_blank) {
        notes.push(RecordNote::UnquotedTrailingWhitespace);
    }
    if value.len() >= 2 && value.starts_with('`') && value.ends_with('`') {
        notes.push(RecordNote::Backtick);
    }
    Scanned {
        value: value.to_owned(),
        quote: Quote::None,
        end: start,
        notes,
    }
}

/// A quoted value from just after its opening quote, possibly over several lines.
fn scan_quoted(lines: &[Line], start: usize, first: &str, quote: Quote) -> Result<Scanned, String> {
    let (q, kind) = match quote {
        Quote::Double => ('"', "double"),
        _ => ('\'', "single"),
    };
    let mut value = String::new();
    let mut notes = Vec::new();
    let mut li = start;
    let mut chunk = first;
    loop {
        let mut chars = chunk.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == q {
                let trailing = chunk[i + 1..].trim_start_matches(is_blank);
                if trailing.is_empty() || trailing.starts_with('#') {
                    return Ok(Scanned {
                        value,
                        quote,
                        end: li,
                        notes,
                    });
                }
                return Err(text_after_quote(kind, start, li));
            }
            if quote == Quote::Double && c == '\\' {
                match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(e @ ('\\' | '"' | '$' | '\'')) => value.push(e),
                    // Unknown escapes keep their backslash (as python-dotenv does),
                    // so Windows paths survive and nothing is silently lost.
                    Some(e) => {
                        value.push('\\');
                        value.push(e);
                        notes.push(RecordNote::UnknownEscape);
                    }
                    // A backslash ending the line is kept; the line break follows.
                    None => {
                        value.push('\\');
                        notes.push(RecordNote::UnknownEscape);
                    }
                }
                continue;
            }
            value.push(c);
        }
        if li + 1 >= lines.len() {
            return Err(format!(
                "unterminated {kind} quote opened on this line (a quoted value may span \
                 lines, so the rest of the file was searched for its end); {}",
                match quote {
                    Quote::Double =>
                        "close it with `\"`, and write a `\"` inside the value as `\\\"`",
                    _ => "close it with `'`, or use double quotes if the value contains `'`",
                }
            ));
        }
        // The value goes on: the line break is part of it, always as a bare LF.
        if lines[li].crlf {
            notes.push(RecordNote::CrlfInsideQuotes);
        }
        notes.push(RecordNote::MultiLine);
        value.push('\n');
        li += 1;
        chunk = lines[li].text.as_str();
    }
}

/// The error for `KEY='x'y`: text after the closing quote.
fn text_after_quote(kind: &str, start: usize, closing: usize) -> String {
    if closing != start {
        return format!(
            "the {kind} quote opened on this line closes on line {} and is followed by more \
             text there; the quote on this line is probably missing its closing quote",
            closing + 1
        );
    }
    let hint = if kind == "single" {
        "; single quotes have no escapes, so `\\'` cannot put a `'` in the value: use \
         double quotes instead"
    } else {
        ""
    };
    format!(
        "unexpected text after the closing {kind} quote; put the whole value inside the \
         quotes, or put whitespace and `#` before a comment{hint}"
    )
}

#[cfg(test)]
mod tests;
