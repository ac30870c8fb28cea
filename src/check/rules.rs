//! Pure rules over one value the worker would get (SPEC 4): emptiness, stray
//! whitespace, control characters, a BOM, kept quotes, placeholders, the
//! `pattern` rule and the dotenv notes that deserve a warning. Provider shape and
//! mismatch live in [`super::provider`]; [`value_hits`] runs them all in an order
//! that reports each mistake once.
//!
//! Every message and hint is built from the key name, fixed literals, the config's
//! own text (a `pattern`) and at most a length. No rule ever copies any part of a
//! value into its output, so findings can be printed anywhere.

use regex::Regex;

use crate::secret::Provenance;
use crate::sources::Severity;
use crate::sources::dotenv::{Quote, RecordNote};

use super::provider::{self, Family, Host};

/// One rule's verdict; the caller adds the key's workers and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

pub(super) fn hit(
    severity: Severity,
    code: &'static str,
    message: String,
    hint: impl Into<Option<String>>,
) -> Hit {
    Hit {
        severity,
        code,
        message,
        hint: hint.into(),
    }
}

/// Where a value was written, which decides how to tell the user to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A dotenv record, with its quoting.
    Dotenv(Quote),
    /// A `dir` source file or a `*_FILE` indirection.
    SecretFile,
    /// agentsup's own environment.
    ProcessEnv,
    /// A `command` source.
    Command,
    /// `[env] vars` or a worker's `vars`.
    Config,
    /// Anything else.
    Other,
}

impl Origin {
    pub(crate) fn of(provenance: &Provenance, quote: Option<Quote>) -> Origin {
        match provenance {
            Provenance::Dotenv { .. } => Origin::Dotenv(quote.unwrap_or(Quote::None)),
            Provenance::SecretFile { .. } | Provenance::FileIndirection { .. } => {
                Origin::SecretFile
            }
            Provenance::ProcessEnv => Origin::ProcessEnv,
            Provenance::Command { .. } => Origin::Command,
            Provenance::GlobalVars | Provenance::WorkerVars => Origin::Config,
            Provenance::Agentsup => Origin::Other,
        }
    }
}

/// What one value is checked against.
pub(crate) struct ValueInput<'a> {
    /// The variable name.
    pub key: &'a str,
    /// The value the worker would get.
    pub value: &'a str,
    /// Where it was written.
    pub origin: Origin,
    /// Secret-shaped (by name or `secret = true`) or provider-shaped: placeholder,
    /// `#` and `$` rules apply, and stray whitespace is an error, not a warning.
    pub credential: bool,
    /// The provider, and whether `[keys.X] provider` named it (else inferred).
    pub provider: Option<(Family, bool)>,
    /// Where the worker's base URL for that provider points.
    pub host: Host,
    /// `[keys.X] pattern`: its text and the compiled regex.
    pub pattern: Option<&'a (String, Regex)>,
    /// Dotenv notes for the record.
    pub notes: &'a [RecordNote],
}

/// Runs every value rule, suppressing findings that only restate an earlier one
/// (a placeholder does not also get a provider-shape error).
pub(crate) fn value_hits(inp: &ValueInput<'_>) -> Vec<Hit> {
    let v = inp.value;
    if v.trim().is_empty() {
        return vec![empty_hit(inp)];
    }
    let mut hits = Vec::new();
    hits.extend(whitespace_hit(inp));
    hits.extend(control_hit(inp));
    hits.extend(bom_hit(inp));
    hits.extend(quotes_hit(inp));

    // Shape rules look at the value as the user meant it, so one stray newline or
    // pair of quotes is reported once, not again as "does not start with sk-".
    let cleaned = clean(v);
    let mut placeholder = None;
    if inp.credential {
        placeholder = placeholder_hit(inp, cleaned);
    }
    let is_placeholder = placeholder.is_some();
    hits.extend(placeholder);
    if !is_placeholder {
        hits.extend(inner_whitespace_hit(inp, cleaned));
        if let Some((family, explicit)) = inp.provider {
            hits.extend(provider::provider_hit(
                inp.key, cleaned, family, explicit, inp.host,
            ));
        }
        if let Some((text, re)) = inp.pattern {
            if !re.is_match(cleaned) {
                hits.push(hit(
                    Severity::Error,
                    "pattern",
                    format!(
                        "{} does not match its pattern `{text}` from [keys.{}]",
                        inp.key, inp.key
                    ),
                    format!("fix the value, or the pattern in [keys.{}]", inp.key),
                ));
            }
        }
    }
    hits.extend(note_hits(inp, is_placeholder));
    hits
}

/// The value with surrounding whitespace, BOMs and one pair of matching quotes
/// removed.
pub(crate) fn clean(v: &str) -> &str {
    fn trim(s: &str) -> &str {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
    }
    let t = trim(v);
    match quote_pair(t) {
        // The quote characters are ASCII, so slicing one byte off each end is safe.
        Some(_) => trim(&t[1..t.len() - 1]),
        None => t,
    }
}

/// The quote character when `t` is wrapped in a matching pair of `"`, `'` or `` ` ``.
fn quote_pair(t: &str) -> Option<char> {
    let first = t.chars().next()?;
    (t.len() >= 2 && matches!(first, '"' | '\'' | '`') && t.ends_with(first)).then_some(first)
}

fn empty_hit(inp: &ValueInput<'_>) -> Hit {
    let what = if inp.value.is_empty() {
        "is set but empty"
    } else {
        "holds only whitespace"
    };
    let why = if inp.credential {
        "; SDKs treat an empty key as missing or send an empty `Authorization` header \
         (openai-python before 1.92.3 reports that as a connection error)"
    } else {
        ""
    };
    let hint = match inp.origin {
        Origin::ProcessEnv => format!(
            "agentsup's own environment sets {} to an empty value (`docker run -e {}=`, an unset CI secret, `export {}=` in a shell); unset it or give it the real value",
            inp.key, inp.key, inp.key
        ),
        Origin::Dotenv(_) => format!(
            "give {} a value in the file, or delete the line so another source can provide it",
            inp.key
        ),
        _ => format!(
            "give {} a value where it is set, or remove it from the worker's `keys`",
            inp.key
        ),
    };
    hit(
        Severity::Error,
        "empty",
        format!("{} {what}{why}", inp.key),
        hint,
    )
}

/// "a space", "a newline (LF)", … for the distinct whitespace characters of `run`.
fn whitespace_names(run: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    for c in run.chars() {
        let name = match c {
            ' ' => "a space",
            '\t' => "a tab",
            '\n' => "a newline (LF)",
            '\r' => "a carriage return (CR)",
            _ => "other Unicode whitespace",
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(" and ")
}

fn whitespace_fix(origin: Origin) -> &'static str {
    match origin {
        Origin::Dotenv(Quote::Double | Quote::Single) => {
            "quoted values keep their spaces and line breaks: remove them inside the quotes"
        }
        Origin::Dotenv(Quote::None) => "remove them in the file",
        Origin::SecretFile => {
            "agentsup removes one trailing newline from a secret file, no more: rewrite it with \
             `printf '%s' \"$VALUE\" > FILE` or `kubectl create secret generic --from-literal`"
        }
        Origin::ProcessEnv => {
            "fix it where agentsup's environment is set (docker -e, a Kubernetes secretKeyRef, a CI \
             secret); a Kubernetes `stringData` block written with `|` adds a trailing newline, `|-` does not"
        }
        Origin::Command => "the secret store holds it that way: store the value without it",
        Origin::Config => "fix it in supervisor.toml",
        Origin::Other => "remove it where the value is set",
    }
}

fn whitespace_hit(inp: &ValueInput<'_>) -> Option<Hit> {
    let v = inp.value;
    let lead: String = v.chars().take_while(|c| c.is_whitespace()).collect();
    let trail: String = {
        let mut t: Vec<char> = v.chars().rev().take_while(|c| c.is_whitespace()).collect();
        t.reverse();
        t.into_iter().collect()
    };
    let mut parts = Vec::new();
    if !lead.is_empty() {
        parts.push(format!("starts with {}", whitespace_names(&lead)));
    }
    if !trail.is_empty() {
        parts.push(format!("ends with {}", whitespace_names(&trail)));
    }
    if parts.is_empty() {
        return None;
    }
    let (severity, why) = if inp.credential || inp.provider.is_some() {
        (
            Severity::Error,
            "httpx refuses the header (`Illegal header value`), Python SDKs report that as a \
             connection error after retrying, and the error text holds the whole key",
        )
    } else {
        (
            Severity::Warning,
            "the worker gets it too; most programs do not strip it",
        )
    };
    Some(hit(
        severity,
        "whitespace",
        format!("{} {}; {why}", inp.key, parts.join(" and ")),
        whitespace_fix(inp.origin).to_string(),
    ))
}

/// Whitespace inside a provider key. Multi-line values are legitimate (PEM keys),
/// but an API key is one token.
fn inner_whitespace_hit(inp: &ValueInput<'_>, cleaned: &str) -> Option<Hit> {
    inp.provider?;
    let inner: String = cleaned.chars().filter(|c| c.is_whitespace()).collect();
    (!inner.is_empty()).then(|| {
        hit(
            Severity::Error,
            "whitespace",
            format!(
                "{} has {} inside the value; an API key is a single token, and a line break in a header is refused",
                inp.key,
                whitespace_names(&inner)
            ),
            "copy the key again in one piece".to_string(),
        )
    })
}

/// Characters that are invisible in editors and terminals but change the key.
fn invisible_name(c: char) -> Option<&'static str> {
    match c {
        '\0' => Some("a NUL byte"),
        '\u{1b}' => Some("an escape character (ESC)"),
        '\u{7f}' => Some("a delete character (DEL)"),
        '\u{a0}' => Some("a no-break space (U+00A0)"),
        '\u{200b}' => Some("a zero-width space (U+200B)"),
        '\u{200c}' | '\u{200d}' => Some("a zero-width joiner (U+200C/U+200D)"),
        '\u{2060}' => Some("a word joiner (U+2060)"),
        '\u{2028}' | '\u{2029}' => Some("a Unicode line separator (U+2028/U+2029)"),
        '\t' | '\n' | '\r' => None,
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

fn control_hit(inp: &ValueInput<'_>) -> Option<Hit> {
    let mut names: Vec<&str> = Vec::new();
    for name in inp.value.chars().filter_map(invisible_name) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return None;
    }
    let why = if names.contains(&"a NUL byte") {
        "no process environment can carry a NUL byte, so the worker would get the value cut short"
    } else {
        "it is invisible in most editors and terminals, and the provider sees a different key"
    };
    Some(hit(
        Severity::Error,
        "control-char",
        format!("{} contains {}; {why}", inp.key, names.join(" and ")),
        "type or copy the value again; `cat -A FILE` shows hidden characters".to_string(),
    ))
}

fn bom_hit(inp: &ValueInput<'_>) -> Option<Hit> {
    let v = inp.value;
    if !v.contains('\u{feff}') {
        return None;
    }
    let at = if v.trim_start().starts_with('\u{feff}') {
        " at the start"
    } else {
        ""
    };
    let hint = match inp.origin {
        Origin::SecretFile | Origin::Dotenv(_) => {
            "save the file as UTF-8 without BOM (Windows editors add one with \"UTF-8 with BOM\")"
        }
        _ => {
            "remove it where the value is set; it usually comes from a file saved as \"UTF-8 with BOM\""
        }
    };
    Some(hit(
        Severity::Error,
        "bom",
        format!(
            "{} contains a byte-order mark (U+FEFF){at}; it is invisible, and the provider sees a different key",
            inp.key
        ),
        hint.to_string(),
    ))
}

fn quotes_hit(inp: &ValueInput<'_>) -> Option<Hit> {
    let q = quote_pair(
        inp.value
            .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}'),
    )?;
    let kind = match q {
        '"' => "double quotes",
        '\'' => "single quotes",
        _ => "backticks",
    };
    let hint = match inp.origin {
        Origin::Dotenv(Quote::Double | Quote::Single) => {
            "the file quotes the value twice (KEY=\"'…'\"): keep one pair"
        }
        Origin::Dotenv(Quote::None) => {
            "agentsup and python-dotenv keep backticks (Node's dotenv strips them): use single or double quotes"
        }
        Origin::ProcessEnv => {
            "`docker run --env-file` keeps quotes (docker/cli#3630): write KEY=value there without \
             quotes, or load the file with a `dotenv` source"
        }
        Origin::SecretFile | Origin::Command => "the secret holds the quotes: store the bare value",
        Origin::Config => {
            "TOML strings are quoted already: drop the inner quotes in supervisor.toml"
        }
        Origin::Other => "remove the quotes where the value is set",
    };
    Some(hit(
        Severity::Error,
        "quotes",
        format!(
            "{} is wrapped in {kind} that are part of the value; the worker would send them with the key",
            inp.key
        ),
        hint.to_string(),
    ))
}

/// Prefixes a placeholder may carry (`sk-xxxx`, `AIzaXXXX`).
const KEY_PREFIXES: &[&str] = &[
    "sk-ant-api03-",
    "sk-ant-",
    "sk-proj-",
    "sk-svcacct-",
    "sk-admin-",
    "sk-",
    "AIza",
    "gsk_",
];

/// Whole values that are placeholders (lower-cased, `-`, `.` and spaces as `_`).
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change_me",
    "todo",
    "tbd",
    "fixme",
    "replace_me",
    "replaceme",
    "placeholder",
    "dummy",
    "none",
    "null",
    "nil",
    "undefined",
    "example",
    "xxx",
    "api_key",
    "apikey",
    "key",
    "token",
    "your_key",
    "your_token",
    "your_secret",
    "secret_key",
    "insert_key_here",
];

/// Fragments no real key contains (each long enough that a random key hits it with
/// negligible probability).
const PLACEHOLDER_FRAGMENTS: &[&str] = &[
    "changeme",
    "change_me",
    "replace_me",
    "replaceme",
    "placeholder",
    "your_api",
    "your_key",
    "yourkey",
    "yourapikey",
    "insert_your",
    "_here",
    "example",
    "redacted",
];

/// What kind of placeholder `v` is, as a fixed description (never the value).
pub(crate) fn placeholder_kind(v: &str) -> Option<&'static str> {
    if v.contains("...") || v.contains('…') {
        return Some("an example key with `...` in it");
    }
    if v.contains("***") {
        return Some("a masked key copied from a log or a dashboard (it contains `***`)");
    }
    if v.len() >= 2 && v.starts_with('<') && v.ends_with('>') {
        return Some("an angle-bracket placeholder such as `<your-api-key>`");
    }
    let braced = (v.starts_with("${") || v.starts_with("{{")) && v.ends_with('}');
    let bare = v.strip_prefix('$').is_some_and(crate::plan::is_var_name);
    if braced || bare {
        return Some(
            "an unexpanded variable reference such as `${OTHER_VAR}` (agentsup does not expand variables)",
        );
    }
    let mut rest = v;
    let mut prefixed = false;
    if let Some(p) = KEY_PREFIXES.iter().find(|p| v.starts_with(**p)) {
        rest = &v[p.len()..];
        prefixed = true;
    }
    let body: Vec<char> = rest
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if body.is_empty() && prefixed {
        return Some("a bare key prefix such as `sk-`");
    }
    if body.len() >= 3 && body.iter().all(|c| *c == body[0]) {
        return Some("a run of one repeated character such as `sk-xxxxxxxx`");
    }
    let n: String = v
        .chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let n = n.trim_matches('_');
    if PLACEHOLDER_WORDS.contains(&n)
        || n.starts_with("your_")
        || PLACEHOLDER_FRAGMENTS.iter().any(|f| n.contains(f))
    {
        return Some("a placeholder such as `your-api-key`, `changeme` or `TODO`");
    }
    None
}

fn placeholder_hit(inp: &ValueInput<'_>, cleaned: &str) -> Option<Hit> {
    if cleaned.starts_with('#') {
        return Some(hit(
            Severity::Error,
            "placeholder",
            format!(
                "{} starts with `#`, so it is probably a comment that became the value: python-dotenv \
                 and Compose read `KEY=   # comment` as the value `# comment`",
                inp.key
            ),
            format!(
                "give {} its real value, or quote it if the `#` belongs to the key",
                inp.key
            ),
        ));
    }
    let kind = placeholder_kind(cleaned)?;
    // OpenAI-compatible local servers (vLLM, Ollama, llama.cpp) take any key, and
    // their docs use words like "dummy"; with such a base URL this is only a warning.
    let local = inp.host == Host::Other
        && matches!(inp.provider, Some((Family::OpenAi | Family::Anthropic, _)));
    let (severity, tail) = if local {
        (
            Severity::Warning,
            "; its base URL points at another server, which may accept any key",
        )
    } else {
        (Severity::Error, "")
    };
    Some(hit(
        severity,
        "placeholder",
        format!(
            "{} holds a placeholder, not a real value: it looks like {kind}{tail}",
            inp.key
        ),
        format!("put the real value of {} where this one is set", inp.key),
    ))
}

fn note_hits(inp: &ValueInput<'_>, placeholder: bool) -> Vec<Hit> {
    let mut hits = Vec::new();
    for note in inp.notes {
        match note {
            // A value starting with `#` already has its own error.
            RecordNote::UnquotedHash if !(placeholder && clean(inp.value).starts_with('#')) => {
                hits.push(hit(
                    Severity::Warning,
                    "unquoted-hash",
                    format!(
                        "{}'s unquoted value contains `#`: agentsup and python-dotenv keep the whole value, \
                         but Node's dotenv and dotenvx cut it at the `#`, so a Node process reading this \
                         file gets a truncated key",
                        inp.key
                    ),
                    format!("quote the value ({}='…') so every tool reads the same key", inp.key),
                ));
            }
            RecordNote::ContainsDollar if inp.credential && !placeholder => hits.push(hit(
                Severity::Warning,
                "dollar",
                format!(
                    "{} contains `$`: agentsup keeps `$` literally; docker compose and dotenv-expand would interpolate it",
                    inp.key
                ),
                "if docker compose, dotenv-expand or dotenv-cli also read this file, put the value in \
                 single quotes"
                    .to_string(),
            )),
            RecordNote::UnknownEscape if inp.credential => hits.push(hit(
                Severity::Warning,
                "escape",
                format!(
                    "{}'s double-quoted value has a backslash that is not a known escape; agentsup keeps \
                     it, other dotenv dialects may not",
                    inp.key
                ),
                "use single quotes for a value with literal backslashes".to_string(),
            )),
            _ => {}
        }
    }
    hits
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
