//! Pure rules over one value the worker would get (SPEC 4): emptiness, stray
//! whitespace, control characters, a BOM, kept quotes, the `pattern` rule and the
//! dotenv notes that deserve a warning. Placeholders live in
//! [`super::placeholder`], provider shape and mismatch in [`super::provider`];
//! [`value_hits`] runs them all in an order that reports each mistake once.
//!
//! Every message and hint is built from the key name, fixed literals, the config's
//! own text (a `pattern`) and at most a length. No rule ever copies any part of a
//! value into its output, so findings can be printed anywhere.

use crate::diag::Severity;
use crate::sources::dotenv::{Quote, RecordNote};

pub(crate) use super::hit::{Hit, hit};
pub(crate) use super::input::{Origin, ValueInput};
use super::placeholder::placeholder_hit;
use super::provider;

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
    let placeholder = placeholder_hit(inp, cleaned);
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
    let hint: std::borrow::Cow<'_, str> = match inp.origin {
        // The file's own pair outside, the pair left in the value inside, as the
        // line reads: KEY="'…'" or KEY='"…"'.
        Origin::Dotenv(outer @ (Quote::Double | Quote::Single)) => {
            let (o, i) = if outer == Quote::Double { ('"', q) } else { ('\'', q) };
            format!("the file quotes the value twice (KEY={o}{i}…{i}{o}): keep one pair").into()
        }
        Origin::Dotenv(Quote::None) => {
            "agentsup and python-dotenv keep backticks (Node's dotenv strips them): use single or double quotes".into()
        }
        Origin::ProcessEnv => {
            "`docker run --env-file` keeps quotes (docker/cli#3630): write KEY=value there without \
             quotes, or load the file with a `dotenv` source".into()
        }
        Origin::SecretFile | Origin::Command => "the secret holds the quotes: store the bare value".into(),
        Origin::Config => {
            "TOML strings are quoted already: drop the inner quotes in supervisor.toml".into()
        }
        Origin::Other => "remove the quotes where the value is set".into(),
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
                    quote_hint(inp.key, inp.value),
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

/// How to quote a value holding an unquoted `#` so every dotenv reads it whole,
/// by what the value holds (named, never shown). Single quotes take everything
/// literally but a `'`; inside double quotes agentsup and python-dotenv decode
/// `\"` and `\\`, while Node's dotenv decodes only `\n` and `\r` and keeps other
/// backslashes (docs/dotenv.md, row 7).
fn quote_hint(key: &str, value: &str) -> String {
    let (single, double, backslash) = (
        value.contains('\''),
        value.contains('"'),
        value.contains('\\'),
    );
    if !single {
        return format!("quote the value ({key}='…') so every tool reads the same key");
    }
    let escapes: Vec<&str> = [
        (double, "each `\"` as `\\\"`"),
        (backslash, "each `\\` as `\\\\`"),
    ]
    .into_iter()
    .filter_map(|(has, how)| has.then_some(how))
    .collect();
    if escapes.is_empty() {
        return format!(
            "quote the value in double quotes ({key}=\"…\"): it holds a `'`, which single \
             quotes cannot"
        );
    }
    format!(
        "quote the value in double quotes ({key}=\"…\", it holds a `'`), writing {}: agentsup \
         and python-dotenv read that back, but Node's dotenv keeps the backslashes, so for a \
         Node worker set {key} in a `dir` source (one file per key) instead",
        escapes.join(" and ")
    )
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
