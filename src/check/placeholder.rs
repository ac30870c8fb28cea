//! Placeholders (SPEC 4): a value that is an example, not a real key or setting
//! (`changeme`, `sk-...`, `<your key>`, `TODO`). Every declared key gets the plain
//! rules, which look at the whole value only; credentials also get the broad ones,
//! where a value such as `none`, `dummy` or `https://example.com/…` cannot be real.
//! Like every rule, no part of the value reaches a message.

use crate::diag::Severity;

use super::hit::{Hit, hit};
use super::input::ValueInput;
use super::provider::{Family, Host};

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

/// Whole values (normalised as in [`PLAIN_PLACEHOLDER_WORDS`]) that are
/// placeholders in a credential, on top of those that are in any variable: a key
/// cannot be `none` or `token`, an ordinary setting can.
const CREDENTIAL_PLACEHOLDER_WORDS: &[&str] = &[
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
    let n = normalize(v);
    let n = n.as_str();
    if PLAIN_PLACEHOLDER_WORDS.contains(&n)
        || CREDENTIAL_PLACEHOLDER_WORDS.contains(&n)
        || n.starts_with("your_")
        || PLACEHOLDER_FRAGMENTS.iter().any(|f| n.contains(f))
    {
        return Some("a placeholder such as `your-api-key`, `changeme` or `TODO`");
    }
    None
}

/// Whole values (lower-cased, `-`, `.` and spaces as `_`) that are placeholders in
/// any variable, secret or not.
const PLAIN_PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change_me",
    "todo",
    "tbd",
    "fixme",
    "replace_me",
    "replaceme",
];

/// Starts of a one-token value (no spaces) that only placeholders have:
/// `your-api-key`, `YOUR_DB_HOST`, `insert-your-key-here`.
const PLAIN_PLACEHOLDER_STARTS: &[&str] = &[
    "your_",
    "insert_your",
    "insert_key",
    "enter_your",
    "put_your",
    "paste_your",
];

/// Words that make an angle-bracketed value a placeholder (`<your key>`,
/// `<DATABASE_URL>`) rather than a literal such as an LLM's `<eos>` or
/// `<start_of_turn>`.
const ANGLE_PLACEHOLDER_WORDS: &[&str] = &[
    "your",
    "key",
    "token",
    "secret",
    "password",
    "url",
    "host",
    "value",
    "here",
    "placeholder",
];

/// The placeholders of SPEC 4 (`sk-...`, `your-api-key`, `changeme`, `xxx`, `<...>`,
/// `TODO`) in a value that is not a credential, matched on the whole value so an
/// ordinary value (`gpt-4o`, `Loading...`, a URL with `xxx` inside, `#ffffff`,
/// `none`, `<eos>`) never fires. Credentials get the broader [`placeholder_kind`].
pub(crate) fn plain_placeholder_kind(v: &str) -> Option<&'static str> {
    if matches!(v, "..." | "…") {
        return Some("an example value `...`");
    }
    if v.len() >= 2 && v.starts_with('<') && v.ends_with('>') {
        let inner = v[1..v.len() - 1].to_ascii_lowercase();
        let plain = inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if plain && ANGLE_PLACEHOLDER_WORDS.iter().any(|w| inner.contains(w)) {
            return Some("an angle-bracket placeholder such as `<your-api-key>`");
        }
        return None;
    }
    // `sk-...`, `sk-xxxx`, `AIza****`: a key prefix followed by filler only.
    if let Some(p) = KEY_PREFIXES.iter().find(|p| v.starts_with(**p)) {
        let rest: Vec<char> = v[p.len()..]
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .collect();
        let filler = |c: &char| matches!(c, '.' | '…' | '*' | 'x' | 'X');
        if !rest.is_empty() && rest.iter().all(filler) {
            return Some("an example key such as `sk-...` or `sk-xxxxxxxx`");
        }
    }
    // `xxx`, `XXXX-XXXX`.
    let body: Vec<char> = v.chars().filter(|c| !matches!(c, '-' | '_')).collect();
    if body.len() >= 3 && body.iter().all(|c| matches!(c, 'x' | 'X')) {
        return Some("a run of `x` such as `xxx`");
    }
    let n = normalize(v);
    // A start such as `your_` counts only in a one-token value: free text such as
    // `your order is ready` is not a placeholder, `your-api-key` is.
    let one_token = !v.chars().any(char::is_whitespace);
    if PLAIN_PLACEHOLDER_WORDS.contains(&n.as_str())
        || (one_token && PLAIN_PLACEHOLDER_STARTS.iter().any(|s| n.starts_with(s)))
    {
        return Some("a placeholder such as `your-api-key`, `changeme` or `TODO`");
    }
    None
}

/// Lower-cased, with `-`, `.` and spaces as `_`, and no `_` at either end.
fn normalize(v: &str) -> String {
    let n: String = v
        .chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    n.trim_matches('_').to_string()
}

pub(super) fn placeholder_hit(inp: &ValueInput<'_>, cleaned: &str) -> Option<Hit> {
    // Any declared key (SPEC 4); the broad rules only for credentials, where a value
    // such as `none`, `dummy` or `https://example.com/…` cannot be real.
    if !inp.credential {
        let kind = plain_placeholder_kind(cleaned)?;
        return Some(placeholder_finding(inp, kind));
    }
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
    Some(placeholder_finding(inp, kind))
}

fn placeholder_finding(inp: &ValueInput<'_>, kind: &str) -> Hit {
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
    hit(
        severity,
        "placeholder",
        format!(
            "{} holds a placeholder, not a real value: it looks like {kind}{tail}",
            inp.key
        ),
        format!("put the real value of {} where this one is set", inp.key),
    )
}
