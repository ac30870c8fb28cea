//! Pure rules over one value the worker would get (SPEC 4): emptiness, stray
//! whitespace, control characters, a BOM, kept quotes, placeholders, provider shape
//! and the `pattern` rule, plus the dotenv notes that deserve a warning.
//!
//! Every message and hint is built from the key name, fixed literals, the config's
//! own text (a `pattern`) and at most a length. No rule ever copies any part of a
//! value into its output, so findings can be printed anywhere.

use regex::Regex;

use crate::config::Provider;
use crate::secret::Provenance;
use crate::sources::Severity;
use crate::sources::dotenv::{Quote, RecordNote};

/// One rule's verdict; the caller adds the key's workers and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

fn hit(severity: Severity, code: &'static str, message: String, hint: impl Into<Option<String>>) -> Hit {
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
            Provenance::SecretFile { .. } | Provenance::FileIndirection { .. } => Origin::SecretFile,
            Provenance::ProcessEnv => Origin::ProcessEnv,
            Provenance::Command { .. } => Origin::Command,
            Provenance::GlobalVars | Provenance::WorkerVars => Origin::Config,
            Provenance::Agentsup => Origin::Other,
        }
    }
}

/// A provider whose keys have a recognisable shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    OpenAi,
    AzureOpenAi,
    Anthropic,
    Google,
    Groq,
    Mistral,
    Cohere,
}

impl Family {
    /// `[keys.X] provider` → family; `none` switches the shape checks off.
    pub(crate) fn from_config(p: Provider) -> Option<Family> {
        match p {
            Provider::Openai => Some(Family::OpenAi),
            Provider::AzureOpenai => Some(Family::AzureOpenAi),
            Provider::Anthropic => Some(Family::Anthropic),
            Provider::Google => Some(Family::Google),
            Provider::None => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::OpenAi => "OpenAI",
            Family::AzureOpenAi => "Azure OpenAI",
            Family::Anthropic => "Anthropic",
            Family::Google => "Google",
            Family::Groq => "Groq",
            Family::Mistral => "Mistral",
            Family::Cohere => "Cohere",
        }
    }

    /// The variable a key of this family belongs in.
    fn home(self) -> &'static str {
        match self {
            Family::OpenAi => "OPENAI_API_KEY",
            Family::AzureOpenAi => "AZURE_OPENAI_API_KEY",
            Family::Anthropic => "ANTHROPIC_API_KEY",
            Family::Google => "GOOGLE_API_KEY",
            Family::Groq => "GROQ_API_KEY",
            Family::Mistral => "MISTRAL_API_KEY",
            Family::Cohere => "CO_API_KEY",
        }
    }
}

/// Where a base URL (`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`) sends requests. Only
/// the class is kept: the URL itself is a value and is never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    /// Not set: the SDK's default.
    Unset,
    /// `api.openai.com`.
    OpenAi,
    /// An Azure OpenAI resource.
    Azure,
    /// `api.anthropic.com`.
    Anthropic,
    /// Gemini's OpenAI-compatible endpoint.
    Google,
    /// Anything else: a proxy, a gateway, a local server.
    Other,
}

/// Scheme and lower-cased host of a URL, without any userinfo, port or path.
pub(crate) fn parse_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    if scheme.is_empty() || host.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.trim_end_matches('.').to_ascii_lowercase()))
}

/// True for the hosts of Azure OpenAI resources (classic, AI services, AI Foundry).
pub(crate) fn is_azure_host(host: &str) -> bool {
    [".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com"]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// Classifies a base URL value.
pub(crate) fn classify_base_url(url: Option<&str>) -> Host {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Host::Unset;
    };
    match parse_url(url) {
        Some((_, host)) if host == "api.openai.com" => Host::OpenAi,
        Some((_, host)) if host == "api.anthropic.com" => Host::Anthropic,
        Some((_, host)) if host == "generativelanguage.googleapis.com" => Host::Google,
        Some((_, host)) if is_azure_host(&host) => Host::Azure,
        _ => Host::Other,
    }
}

/// A key shape recognised from the value alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// `sk-ant-…`.
    Anthropic,
    /// `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`: only OpenAI issues these.
    OpenAiScoped,
    /// Any other `sk-…`: OpenAI's legacy keys, but DeepSeek and others use it too.
    OpenAi,
    /// `AIza` + 35 characters.
    Google,
    /// `gsk_…`.
    Groq,
    /// 32 hexadecimal characters: Azure's classic key, but not only Azure's.
    AzureHex,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Anthropic => "an Anthropic key (it starts with `sk-ant-`)",
            KeyKind::OpenAiScoped | KeyKind::OpenAi => "an OpenAI key (it starts with `sk-`)",
            KeyKind::Google => "a Google API key (`AIza` and 35 more characters)",
            KeyKind::Groq => "a Groq key (it starts with `gsk_`)",
            KeyKind::AzureHex => "an Azure OpenAI key (32 hexadecimal characters)",
        }
    }

    fn family(self) -> Family {
        match self {
            KeyKind::Anthropic => Family::Anthropic,
            KeyKind::OpenAiScoped | KeyKind::OpenAi => Family::OpenAi,
            KeyKind::Google => Family::Google,
            KeyKind::Groq => Family::Groq,
            KeyKind::AzureHex => Family::AzureOpenAi,
        }
    }

    /// Shapes no other provider uses, so seeing one under a foreign name is proof.
    fn unambiguous(self) -> bool {
        !matches!(self, KeyKind::OpenAi | KeyKind::AzureHex)
    }
}

/// `AIza` followed by exactly 35 of `[0-9A-Za-z_-]`.
pub(crate) fn is_google_key(v: &str) -> bool {
    v.len() == 39
        && v.starts_with("AIza")
        && v[4..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Recognises a key by its shape.
pub(crate) fn recognize(v: &str) -> Option<KeyKind> {
    if v.starts_with("sk-ant-") {
        Some(KeyKind::Anthropic)
    } else if ["sk-proj-", "sk-svcacct-", "sk-admin-"].iter().any(|p| v.starts_with(p)) {
        Some(KeyKind::OpenAiScoped)
    } else if v.starts_with("sk-") {
        Some(KeyKind::OpenAi)
    } else if is_google_key(v) {
        Some(KeyKind::Google)
    } else if v.starts_with("gsk_") {
        Some(KeyKind::Groq)
    } else if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(KeyKind::AzureHex)
    } else {
        None
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
    hits.extend(whitespace_hits(inp));
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
        if let Some((family, explicit)) = inp.provider {
            hits.extend(provider_hit(inp.key, cleaned, family, explicit, inp.host));
        }
        if let Some((text, re)) = inp.pattern {
            if !re.is_match(cleaned) {
                hits.push(hit(
                    Severity::Error,
                    "pattern",
                    format!("{} does not match its pattern `{text}` from [keys.{}]", inp.key, inp.key),
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
        _ => format!("give {} a value where it is set, or remove it from the worker's `keys`", inp.key),
    };
    hit(Severity::Error, "empty", format!("{} {what}{why}", inp.key), hint)
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

fn whitespace_hits(inp: &ValueInput<'_>) -> Vec<Hit> {
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
    let strict = inp.credential || inp.provider.is_some();
    let mut hits = Vec::new();
    if !parts.is_empty() {
        let (severity, why) = if strict {
            (
                Severity::Error,
                "httpx refuses the header (`Illegal header value`), Python SDKs report that as a \
                 connection error after retrying, and the error text holds the whole key",
            )
        } else {
            (Severity::Warning, "the worker gets it too; most programs do not strip it")
        };
        hits.push(hit(
            severity,
            "whitespace",
            format!("{} {}; {why}", inp.key, parts.join(" and ")),
            whitespace_fix(inp.origin).to_string(),
        ));
    }
    // Multi-line values are legitimate (PEM keys), but an API key is one token.
    if inp.provider.is_some() {
        let inner: String = v.trim().chars().filter(|c| c.is_whitespace()).collect();
        if !inner.is_empty() {
            hits.push(hit(
                Severity::Error,
                "whitespace",
                format!(
                    "{} has {} inside the value; an API key is a single token, and a line break in a header is refused",
                    inp.key,
                    whitespace_names(&inner)
                ),
                "copy the key again in one piece".to_string(),
            ));
        }
    }
    hits
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
        _ => "remove it where the value is set; it usually comes from a file saved as \"UTF-8 with BOM\"",
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
    let q = quote_pair(inp.value.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}'))?;
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
        Origin::Config => "TOML strings are quoted already: drop the inner quotes in supervisor.toml",
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
    "changeme", "change_me", "todo", "tbd", "fixme", "replace_me", "replaceme", "placeholder",
    "dummy", "none", "null", "nil", "undefined", "example", "xxx", "api_key", "apikey", "key",
    "token", "your_key", "your_token", "your_secret", "secret_key", "insert_key_here",
];

/// Fragments no real key contains (each long enough that a random key hits it with
/// negligible probability).
const PLACEHOLDER_FRAGMENTS: &[&str] = &[
    "changeme", "change_me", "replace_me", "replaceme", "placeholder", "your_api", "your_key",
    "yourkey", "yourapikey", "insert_your", "_here", "example", "redacted",
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
    let bare = v
        .strip_prefix('$')
        .is_some_and(|rest| crate::plan::is_var_name(rest));
    if braced || bare {
        return Some("an unexpanded variable reference such as `${OTHER_VAR}` (agentsup does not expand variables)");
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
            format!("give {} its real value, or quote it if the `#` belongs to the key", inp.key),
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
        format!("{} holds a placeholder, not a real value: it looks like {kind}{tail}", inp.key),
        format!("put the real value of {} where this one is set", inp.key),
    ))
}

/// What the value must look like, given the provider and where it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    OpenAi,
    Anthropic,
    Google,
    Azure,
    /// Only a recognisably foreign key is wrong (Groq, Mistral, Cohere).
    NotForeign(Family),
}

impl Expect {
    fn describe(self) -> String {
        match self {
            Expect::OpenAi => "an OpenAI key (`sk-…`)".into(),
            Expect::Anthropic => "an Anthropic key (`sk-ant-…`)".into(),
            Expect::Google => "a Google API key (`AIza…`)".into(),
            Expect::Azure => "an Azure OpenAI key".into(),
            Expect::NotForeign(f) => format!("a {} key", f.label()),
        }
    }

    fn family(self) -> Family {
        match self {
            Expect::OpenAi => Family::OpenAi,
            Expect::Anthropic => Family::Anthropic,
            Expect::Google => Family::Google,
            Expect::Azure => Family::AzureOpenAi,
            Expect::NotForeign(f) => f,
        }
    }
}

/// The expected shape, or none when the key may legitimately hold anything (an
/// inferred OpenAI or Anthropic key sent to a proxy or local server: OpenRouter,
/// LiteLLM, vLLM and friends use their own keys under these names).
fn expectation(family: Family, explicit: bool, host: Host) -> Option<(Expect, &'static str)> {
    const OPENAI_401: &str = "the openai SDK sends it to api.openai.com, which answers 401 `invalid_api_key`";
    const AZURE_401: &str = "Azure OpenAI answers 401 \"Access denied due to invalid subscription key or wrong API endpoint\"";
    Some(match (family, host) {
        (Family::OpenAi, Host::Unset | Host::OpenAi) => (Expect::OpenAi, OPENAI_401),
        (Family::OpenAi, Host::Azure) => (
            Expect::Azure,
            "OPENAI_BASE_URL points at an Azure OpenAI resource, which answers 401 \"Access denied \
             due to invalid subscription key or wrong API endpoint\"",
        ),
        (Family::OpenAi, Host::Anthropic) => (
            Expect::Anthropic,
            "OPENAI_BASE_URL points at Anthropic's OpenAI-compatible API, which needs an Anthropic key",
        ),
        (Family::OpenAi, Host::Google) => (
            Expect::Google,
            "OPENAI_BASE_URL points at Gemini's OpenAI-compatible API, which needs a Google API key",
        ),
        (Family::OpenAi, Host::Other) if explicit => (Expect::OpenAi, "[keys] says provider = \"openai\""),
        (Family::OpenAi, Host::Other) => return None,
        (Family::AzureOpenAi, _) => (Expect::Azure, AZURE_401),
        (Family::Anthropic, Host::Unset | Host::Anthropic) => (
            Expect::Anthropic,
            "the anthropic SDK sends it to api.anthropic.com, which answers 401 `invalid x-api-key`",
        ),
        (Family::Anthropic, _) if explicit => (Expect::Anthropic, "[keys] says provider = \"anthropic\""),
        (Family::Anthropic, _) => return None,
        (Family::Google, _) => (Expect::Google, "Google answers 400 `API_KEY_INVALID`"),
        (f @ (Family::Groq | Family::Mistral | Family::Cohere), _) => {
            (Expect::NotForeign(f), "that provider answers 401")
        }
    })
}

/// Provider shape and provider mismatch for one (cleaned) value.
pub(crate) fn provider_hit(key: &str, v: &str, family: Family, explicit: bool, host: Host) -> Option<Hit> {
    let (expect, why) = expectation(family, explicit, host)?;
    let kind = recognize(v);
    let opt_out = format!(
        "if {key} deliberately holds a key for another service, set `[keys.{key}] provider = \"none\"`"
    );
    let mismatch = |k: KeyKind, extra: &str| {
        let home = k.family().home();
        let fix = if home == key {
            format!("put {} in {key}", expect.describe())
        } else {
            format!("move it to {home} and put {} in {key}", expect.describe())
        };
        hit(
            Severity::Error,
            "provider-mismatch",
            format!("{key} holds what looks like {}, not {}: {why}", k.describe(), expect.describe()),
            format!("{fix}{extra}; {opt_out}"),
        )
    };
    let shape = |rule: String| {
        hit(
            Severity::Error,
            "provider-shape",
            format!("{key} does not look like {}: {rule}", expect.describe()),
            format!("copy the key again from {}; {opt_out}", console(expect.family())),
        )
    };
    match (expect, kind) {
        (Expect::OpenAi, Some(KeyKind::OpenAi | KeyKind::OpenAiScoped)) => None,
        (Expect::OpenAi, Some(KeyKind::AzureHex)) => Some(mismatch(
            KeyKind::AzureHex,
            " (an Azure key also needs AZURE_OPENAI_ENDPOINT and OPENAI_API_VERSION)",
        )),
        (Expect::OpenAi, Some(k)) => Some(mismatch(k, "")),
        (Expect::OpenAi, None) => Some(shape("OpenAI keys start with `sk-`".into())),
        (Expect::Anthropic, Some(KeyKind::Anthropic)) => None,
        (Expect::Anthropic, Some(k)) if k != KeyKind::AzureHex => Some(mismatch(k, "")),
        (Expect::Anthropic, _) => Some(shape("Anthropic keys start with `sk-ant-`".into())),
        (Expect::Google, Some(KeyKind::Google)) => None,
        (Expect::Google, Some(k)) if k != KeyKind::AzureHex => Some(mismatch(k, "")),
        (Expect::Google, _) => {
            let len = if v.starts_with("AIza") {
                format!(", and this value has {} characters", v.chars().count())
            } else {
                String::new()
            };
            Some(shape(format!(
                "Google API keys are `AIza` followed by 35 letters, digits, `_` or `-` (39 characters in all){len}"
            )))
        }
        (Expect::Azure, Some(k)) if k != KeyKind::AzureHex => Some(mismatch(
            k,
            "; an Azure resource takes only its own key (Azure portal → Keys and Endpoint)",
        )),
        (Expect::Azure, _) => None,
        (Expect::NotForeign(f), Some(k)) if k.unambiguous() && k.family() != f => Some(mismatch(k, "")),
        (Expect::NotForeign(_), _) => None,
    }
}

fn console(f: Family) -> &'static str {
    match f {
        Family::OpenAi => "https://platform.openai.com/api-keys",
        Family::AzureOpenAi => "the Azure portal (Keys and Endpoint)",
        Family::Anthropic => "https://console.anthropic.com/settings/keys",
        Family::Google => "https://aistudio.google.com/apikey",
        Family::Groq | Family::Mistral | Family::Cohere => "the provider's console",
    }
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
mod tests {
    use super::*;

    const OPENAI: &str = "sk-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2";
    const PROJ: &str = "sk-proj-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2_-Ab";
    const ANTHROPIC: &str = "sk-ant-api03-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2";
    const GOOGLE: &str = "AIzaSyZq8xN3vR7tY2wK5mP9aB4cD6eF1gH0j_-";
    const AZURE: &str = "0123456789abcdef0123456789ABCDEF";

    fn input<'a>(key: &'a str, value: &'a str) -> ValueInput<'a> {
        ValueInput {
            key,
            value,
            origin: Origin::Dotenv(Quote::None),
            credential: crate::secret::name_looks_secret(key),
            provider: super::super::names::infer_family(key).map(|f| (f, false)),
            host: Host::Unset,
            pattern: None,
            notes: &[],
        }
    }

    fn codes(inp: &ValueInput<'_>) -> Vec<&'static str> {
        value_hits(inp).iter().map(|h| h.code).collect()
    }

    fn assert_no_value(hits: &[Hit], value: &str) {
        for h in hits {
            let all = format!("{} {}", h.message, h.hint.clone().unwrap_or_default());
            assert!(!all.contains(value), "value leaked: {all}");
        }
    }

    #[test]
    fn real_looking_keys_pass() {
        assert!(codes(&input("OPENAI_API_KEY", OPENAI)).is_empty());
        assert!(codes(&input("OPENAI_API_KEY", PROJ)).is_empty());
        assert!(codes(&input("ANTHROPIC_API_KEY", ANTHROPIC)).is_empty());
        assert!(codes(&input("GOOGLE_API_KEY", GOOGLE)).is_empty());
        assert!(codes(&input("GEMINI_API_KEY", GOOGLE)).is_empty());
        assert!(codes(&input("AZURE_OPENAI_API_KEY", AZURE)).is_empty());
        assert!(codes(&input("MISTRAL_API_KEY", "Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL")).is_empty());
        assert!(codes(&input("LANGSMITH_API_KEY", "lsv2_pt_0123456789abcdef_0123456789")).is_empty());
        assert!(codes(&input("MODEL", "gpt-4o-mini")).is_empty());
    }

    #[test]
    fn empty_and_whitespace_only() {
        assert_eq!(codes(&input("OPENAI_API_KEY", "")), ["empty"]);
        assert_eq!(codes(&input("OPENAI_API_KEY", " \t\n")), ["empty"]);
        let h = value_hits(&input("OPENAI_API_KEY", ""));
        assert!(h[0].message.contains("is set but empty"));
    }

    #[test]
    fn stray_whitespace() {
        let v = format!("{OPENAI}\n");
        let h = value_hits(&input("OPENAI_API_KEY", &v));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].code, "whitespace");
        assert_eq!(h[0].severity, Severity::Error);
        assert!(h[0].message.contains("ends with a newline (LF)"));
        assert!(h[0].message.contains("httpx refuses the header"));
        assert_no_value(&h, OPENAI);

        let v = format!(" {OPENAI}\r\n");
        let h = value_hits(&input("OPENAI_API_KEY", &v));
        assert!(h[0].message.contains("starts with a space and ends with a carriage return (CR) and a newline (LF)"), "{h:?}");

        let v = format!("{OPENAI} extra");
        assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["whitespace"]);
        // A PEM key under a non-provider name may span lines.
        assert!(codes(&input("SIGNING_PRIVATE_KEY", "-----BEGIN KEY-----\nabc\n-----END KEY-----")).is_empty());
        // Not a credential: only a warning.
        let h = value_hits(&input("MODEL", "gpt-4o "));
        assert_eq!(h[0].severity, Severity::Warning);
    }

    #[test]
    fn control_characters_bom_and_quotes() {
        let v = format!("{OPENAI}\0");
        assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["control-char"]);
        let v = format!("{OPENAI}\u{200b}");
        assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["control-char"]);
        let v = format!("\u{feff}{OPENAI}");
        assert_eq!(codes(&input("OPENAI_API_KEY", &v)), ["bom"]);
        for v in [format!("\"{OPENAI}\""), format!("'{OPENAI}'"), format!("`{OPENAI}`")] {
            let h = value_hits(&input("OPENAI_API_KEY", &v));
            assert_eq!(h.iter().map(|h| h.code).collect::<Vec<_>>(), ["quotes"], "{v}");
            assert_no_value(&h, OPENAI);
        }
        let mut inp = input("OPENAI_API_KEY", "\"sk-abcdefgh\"");
        inp.origin = Origin::ProcessEnv;
        assert!(value_hits(&inp)[0].hint.as_deref().unwrap().contains("docker run --env-file"));
        // A lone quote inside is not "wrapped".
        assert!(codes(&input("DB_PASSWORD", "ab\"cd")).is_empty());
    }

    #[test]
    fn placeholders() {
        for v in [
            "sk-...",
            "sk-proj-…",
            "sk-xxxxxxxxxxxxxxxxxxxx",
            "sk-XXXX-XXXX",
            "sk-",
            "your-api-key",
            "your_api_key_here",
            "YOUR_OPENAI_API_KEY",
            "changeme",
            "CHANGE_ME",
            "xxx",
            "xxxxxxxx",
            "<your key>",
            "<OPENAI_API_KEY>",
            "TODO",
            "REPLACE_ME",
            "placeholder",
            "dummy",
            "None",
            "${OPENAI_API_KEY}",
            "$OPENAI_API_KEY",
            "{{ openai_key }}",
            "sk-abc1***wxyz",
            "[redacted:OPENAI_API_KEY]",
            "insert-your-key-here",
            "AKIAIOSFODNN7EXAMPLE",
        ] {
            let h = value_hits(&input("OPENAI_API_KEY", v));
            assert_eq!(h.len(), 1, "{v}: {h:?}");
            assert_eq!(h[0].code, "placeholder", "{v}");
            assert_eq!(h[0].severity, Severity::Error, "{v}");
            // Short ones (`TODO`, `changeme`) are named by the fixed description.
            if v.len() >= 14 {
                assert_no_value(&h, v);
            }
        }
    }

    #[test]
    fn no_placeholder_false_positives() {
        for v in [OPENAI, PROJ, ANTHROPIC, GOOGLE, AZURE, "sk-test-1234", "sk-demo-rotated-2"] {
            assert!(placeholder_kind(v).is_none(), "{v}");
        }
        // Random base62/base64url keys: no fragment may appear by chance in practice;
        // spot-check a batch of generated ones.
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').chain(['-', '_']).collect();
        for _ in 0..2000 {
            let body: String = (0..48).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let v = format!("sk-proj-{body}");
            assert!(placeholder_kind(&v).is_none(), "{v}");
        }
        // Not a credential: placeholder rules do not apply.
        assert!(codes(&input("MODEL", "dummy")).is_empty());
    }

    #[test]
    fn placeholder_is_a_warning_for_local_servers() {
        let mut inp = input("OPENAI_API_KEY", "dummy");
        inp.host = Host::Other;
        let h = value_hits(&inp);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].severity, Severity::Warning);
    }

    #[test]
    fn comment_as_value() {
        let h = value_hits(&input("FAL_KEY", "# get one at fal.ai"));
        assert_eq!(h[0].code, "placeholder");
        assert!(h[0].message.contains("starts with `#`"));
        assert!(codes(&input("MODEL", "#ffffff")).is_empty());
    }

    #[test]
    fn provider_shapes_and_mismatches() {
        let h = value_hits(&input("OPENAI_API_KEY", ANTHROPIC));
        assert_eq!(h[0].code, "provider-mismatch");
        assert!(h[0].message.contains("an Anthropic key (it starts with `sk-ant-`)"), "{h:?}");
        assert!(h[0].hint.as_deref().unwrap().contains("move it to ANTHROPIC_API_KEY"));
        assert_no_value(&h, ANTHROPIC);

        assert_eq!(codes(&input("ANTHROPIC_API_KEY", OPENAI)), ["provider-mismatch"]);
        assert_eq!(codes(&input("ANTHROPIC_API_KEY", "abcdefghijkl")), ["provider-shape"]);
        assert_eq!(codes(&input("OPENAI_API_KEY", GOOGLE)), ["provider-mismatch"]);
        assert_eq!(codes(&input("OPENAI_API_KEY", AZURE)), ["provider-mismatch"]);
        assert_eq!(codes(&input("OPENAI_API_KEY", "abcdefghijkl")), ["provider-shape"]);
        assert_eq!(codes(&input("GOOGLE_API_KEY", OPENAI)), ["provider-mismatch"]);
        let h = value_hits(&input("GOOGLE_API_KEY", "AIzaShort"));
        assert_eq!(h[0].code, "provider-shape");
        assert!(h[0].message.contains("this value has 9 characters"));
        assert_eq!(codes(&input("AZURE_OPENAI_API_KEY", OPENAI)), ["provider-mismatch"]);
        assert_eq!(codes(&input("GROQ_API_KEY", ANTHROPIC)), ["provider-mismatch"]);
        // Plain `sk-` is ambiguous (DeepSeek, …): not a mismatch for Mistral.
        assert!(codes(&input("MISTRAL_API_KEY", OPENAI)).is_empty());
    }

    #[test]
    fn base_url_decides_the_expected_shape() {
        let mut inp = input("OPENAI_API_KEY", OPENAI);
        inp.host = Host::Azure;
        let h = value_hits(&inp);
        assert_eq!(h[0].code, "provider-mismatch");
        assert!(h[0].message.contains("Azure OpenAI resource"));
        let mut inp = input("OPENAI_API_KEY", AZURE);
        inp.host = Host::Azure;
        assert!(codes(&inp).is_empty());
        // A gateway or local server: any key goes, unless the provider is explicit.
        let mut inp = input("OPENAI_API_KEY", "or-abcdef0123456789");
        inp.host = Host::Other;
        assert!(codes(&inp).is_empty());
        inp.provider = Some((Family::OpenAi, true));
        assert_eq!(codes(&inp), ["provider-shape"]);
        let mut inp = input("OPENAI_API_KEY", ANTHROPIC);
        inp.host = Host::Anthropic;
        assert!(codes(&inp).is_empty());
    }

    #[test]
    fn urls() {
        assert_eq!(classify_base_url(None), Host::Unset);
        assert_eq!(classify_base_url(Some("https://api.openai.com/v1")), Host::OpenAi);
        assert_eq!(classify_base_url(Some("https://my-res.openai.azure.com/openai")), Host::Azure);
        assert_eq!(classify_base_url(Some("http://127.0.0.1:8000/v1")), Host::Other);
        assert_eq!(classify_base_url(Some("https://user:pw@API.OPENAI.COM.:443/v1")), Host::OpenAi);
        assert_eq!(classify_base_url(Some("not a url")), Host::Other);
        assert_eq!(parse_url("http://[::1]:8080/x"), Some(("http".into(), "::1".into())));
    }

    #[test]
    fn pattern_names_the_pattern_not_the_value() {
        let pat = ("^sk-proj-".to_string(), Regex::new("^sk-proj-").unwrap());
        let mut inp = input("OPENAI_API_KEY", OPENAI);
        inp.pattern = Some(&pat);
        let h = value_hits(&inp);
        assert_eq!(h[0].code, "pattern");
        assert!(h[0].message.contains("`^sk-proj-`"));
        assert_no_value(&h, OPENAI);
    }

    #[test]
    fn dotenv_notes() {
        let mut inp = input("OPENAI_API_KEY", "sk-abc#def");
        inp.notes = &[RecordNote::UnquotedHash];
        assert_eq!(codes(&inp), ["unquoted-hash"]);
        let mut inp = input("DB_PASSWORD", "pa$word");
        inp.notes = &[RecordNote::ContainsDollar];
        let h = value_hits(&inp);
        assert_eq!(h[0].code, "dollar");
        assert!(h[0].message.contains("agentsup keeps `$` literally"));
        // Not secret: `$` is nobody's business.
        let mut inp = input("GREETING", "pa$word");
        inp.notes = &[RecordNote::ContainsDollar];
        assert!(codes(&inp).is_empty());
    }

    #[test]
    fn clean_strips_one_layer() {
        assert_eq!(clean(" \"abc\"\n"), "abc");
        assert_eq!(clean("\u{feff}abc"), "abc");
        assert_eq!(clean("\"abc"), "\"abc");
    }
}
