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

impl RecordNote {
    /// A plain-words explanation, safe to print (it never includes the value).
    #[cfg(test)]
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RecordNote::UnquotedHash => {
                "unquoted value contains `#` without a space before it; agentsup and \
                 python-dotenv keep it, Node's dotenv cuts the value there; quote the value"
            }
            RecordNote::ContainsDollar => {
                "value contains `$`; agentsup keeps it literally, but python-dotenv, \
                 dotenvy and Compose may expand it; use single quotes for other tools"
            }
            RecordNote::UnquotedTrailingWhitespace => {
                "spaces after an unquoted value were dropped; quote the value if they \
                 belong to it"
            }
            RecordNote::CrlfInsideQuotes => {
                "Windows line ends (CRLF) inside a multi-line quoted value became LF"
            }
            RecordNote::UnknownEscape => {
                "a backslash in double quotes is not a known escape \
                 (\\n \\r \\t \\\\ \\\" \\$ \\') and was kept; use single quotes for \
                 literal backslashes"
            }
            RecordNote::MultiLine => "the quoted value spans several lines",
            RecordNote::Backtick => {
                "value is wrapped in backticks, which agentsup keeps but Node's dotenv \
                 strips; use single or double quotes"
            }
        }
    }
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
mod tests {
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
    fn notes_describe_without_values() {
        for n in [
            RecordNote::UnquotedHash,
            RecordNote::ContainsDollar,
            RecordNote::UnquotedTrailingWhitespace,
            RecordNote::CrlfInsideQuotes,
            RecordNote::UnknownEscape,
            RecordNote::MultiLine,
            RecordNote::Backtick,
        ] {
            assert!(!n.describe().is_empty());
        }
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
}
