//! Exit classification (SPEC 5): why did a replica's process end?
//!
//! This module owns the one table of built-in output signatures and the pure
//! function `classify` that turns an exit status plus the tail of a run's output
//! into an `ExitClass` (`ok`, `auth`, `config`, `crash`). It does not collect the
//! output (the output task keeps the tail), re-read sources or restart anything (the
//! replica state machine in [`crate::replica`] decides that from the class).
//!
//! Where the signatures come from: `shared/reference/auth-signatures.md` (observed by
//! running the current OpenAI, Anthropic, LangGraph and AutoGen clients) is the main
//! source; `shared/reference/secrets.md` Part C (read in SDK source) covers the
//! providers that were not run (Google, Azure, Groq, Mistral, Cohere, xAI). Where the
//! two disagree the observation wins (auth-signatures.md §9).
//!
//! The tail is unredacted and may hold a whole key (httpx echoes the refused
//! `Authorization` header). Nothing in a `Classification` ever carries text taken
//! from the output except a signature literal of our own table and an environment
//! variable *name* an SDK asked for.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::secret::Sensitive;

/// At most this many lines of a run's output are scanned. auth-signatures.md §7: the
/// malformed-key signature of LangGraph-Python sits 60 lines from the end and an
/// AutoGen team's output is 207 lines, so SPEC 5 keeps the last 200.
pub(crate) const TAIL_MAX_LINES: usize = 200;

/// At most this many bytes of a run's output are scanned (SPEC 5: 64 KiB), so one
/// huge line cannot make classification slow.
pub(crate) const TAIL_MAX_BYTES: usize = 64 * 1024;

/// The class of a finished run (SPEC 5). The replica state machine decides from it
/// whether and when to restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ExitClass {
    /// Status 0, or an exit agentsup asked for.
    Ok,
    /// A provider rejected a credential: re-read sources, then restart.
    Auth,
    /// The SDK found no credential, or could not send it: restarting cannot help.
    Config,
    /// Any other failure, including death by a signal agentsup did not send.
    Crash,
}

impl ExitClass {
    /// The lowercase name used in logs, metrics labels and `status` (SPEC 5).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExitClass::Ok => "ok",
            ExitClass::Auth => "auth",
            ExitClass::Config => "config",
            ExitClass::Crash => "crash",
        }
    }
}

impl fmt::Display for ExitClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended, as the reaper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Termination {
    /// It called `exit` with this status.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Termination::Exited(code) => write!(f, "status {code}"),
            Termination::Signaled(signo) => match nix::sys::signal::Signal::try_from(signo) {
                Ok(sig) => write!(f, "signal {signo} ({})", sig.as_str()),
                Err(_) => write!(f, "signal {signo}"),
            },
        }
    }
}

/// Which tier of the signature table matched (auth-signatures.md §7). When several
/// tiers match, the first in declaration order wins: a malformed key also produces
/// the connection error, and a missing key is not "rejected".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tier {
    /// The HTTP client refused to send a credential holding whitespace or a control
    /// character. Class [`ExitClass::Config`].
    Malformed,
    /// The SDK found no credential at all. Class [`ExitClass::Config`].
    Config,
    /// The provider rejected a credential. Class [`ExitClass::Auth`].
    Auth,
}

/// What the masked key an SDK echoed says about which key was sent (SPEC 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fingerprint {
    /// The echo matches the value agentsup injected under this variable: that key is
    /// revoked or rotated, so re-reading the sources may cure it.
    InjectedKeyRejected {
        /// The variable name (never the value or the echoed text).
        key: String,
    },
    /// The echo matches none of the injected values: the worker sent a hard-coded
    /// key, one from its own `.env`, or an undeclared variable.
    OtherKeySent,
}

/// The result of [`classify`]. Safe to log as a whole: it holds no output text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classification {
    /// The class that drives the restart decision.
    pub class: ExitClass,
    /// One human sentence: what matched and where, e.g. ``matched `invalid x-api-key`
    /// (Anthropic) 3 lines before the end``. Never quotes the output.
    pub reason: String,
    /// The built-in signature that matched, as written in the table.
    pub signature: Option<&'static str>,
    /// Which tier matched; `None` when the status alone decided.
    pub tier: Option<Tier>,
    /// For the config class: the variable the SDK asked for (`OPENAI_API_KEY`, …), so
    /// the supervisor can say whether the worker declares it. For a malformed key:
    /// the injected variable whose value holds whitespace, when one does.
    pub wanted_var: Option<String>,
    /// For the auth class, when the SDK echoed a masked key.
    pub fingerprint: Option<Fingerprint>,
}

impl Classification {
    fn status_only(class: ExitClass, reason: String) -> Self {
        Classification {
            class,
            reason,
            signature: None,
            tier: None,
            wanted_var: None,
            fingerprint: None,
        }
    }
}

/// Everything [`classify`] looks at. Borrowed, so the caller keeps ownership of the
/// (possibly large) tail and of the injected values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassifyInput<'a> {
    /// How the process ended.
    pub termination: Termination,
    /// True when agentsup itself asked this run to stop (stop, restart, reload): its
    /// death by the stop signal, or any exit after it, is not a failure.
    pub was_stop_requested: bool,
    /// The worker's `auth.exit_codes`: a status listed there is an auth failure.
    pub exit_codes: &'a [i32],
    /// The worker's `auth.patterns`, compiled by the plan: a match is an auth failure.
    pub patterns: &'a [Regex],
    /// The end of the run's output (stdout and stderr interleaved, unredacted; invalid
    /// UTF-8 replaced). Longer input is cut to [`tail_window`] here.
    pub tail: &'a str,
    /// The key variables agentsup injected into this run, for the fingerprint.
    pub injected: &'a [(String, Sensitive)],
}

enum Needle {
    /// A case-sensitive substring.
    Literal(&'static str),
    /// A regex, for the few messages whose middle varies.
    Pattern(&'static str),
}

struct Signature {
    tier: Tier,
    needle: Needle,
    /// Who prints it, for the reason sentence.
    origin: &'static str,
    /// Config tier: the variables to name when none can be read off the line.
    wants: &'static [&'static str],
    /// Config tier: read the variable name off the matched line (the SDK names it).
    parse_var: bool,
}

const fn malformed(literal: &'static str, origin: &'static str) -> Signature {
    Signature {
        tier: Tier::Malformed,
        needle: Needle::Literal(literal),
        origin,
        wants: &[],
        parse_var: false,
    }
}

const fn config(
    needle: Needle,
    origin: &'static str,
    wants: &'static [&'static str],
    parse_var: bool,
) -> Signature {
    Signature {
        tier: Tier::Config,
        needle,
        origin,
        wants,
        parse_var,
    }
}

const fn auth(needle: Needle, origin: &'static str) -> Signature {
    Signature {
        tier: Tier::Auth,
        needle,
        origin,
        wants: &[],
        parse_var: false,
    }
}

use Needle::{Literal, Pattern};

/// The built-in signatures, grouped by tier in precedence order (malformed, config,
/// auth: auth-signatures.md §7). Within a tier the first match in table order is the
/// one reported, so specific messages come before the bare class names.
///
/// Deliberately absent, because they are not cured by re-reading keys (SPEC 5,
/// auth-signatures.md §7, Part C.2): `RateLimitError`, `insufficient_quota`,
/// `rate_limit_error`, `APIConnectionError`, `LocalProtocolError` alone, 403
/// `SERVICE_DISABLED` / `PERMISSION_DENIED … has not been used in project`, and a
/// bare `401` (Google and xAI reject keys with 400, Mistral's 401 needs its prefix).
static SIGNATURES: &[Signature] = &[
    // --- malformed -------------------------------------------------------------
    // httpx/h11 (`httpcore2.LocalProtocolError`) refusing `b'Bearer <key>\n'`;
    // observed for keys with a trailing `\n` or space in all 6 Python clients
    // (openai 3.54.0, anthropic 2.12.0, langgraph 1.2.22, autogen 0.7.5, ag2 1.2.1),
    // auth-signatures.md §5.6; Part C "any httpx-based Python SDK". The run then ends
    // like a network error, so this must beat everything else.
    malformed("Illegal header value", "httpx, Python SDKs"),
    // --- config ----------------------------------------------------------------
    // openai-python >= 2.34 (observed 3.54.0) and openai-node >= 5 (observed 6.49.0),
    // and every wrapper of them, unset or empty key: auth-signatures.md §5.5, §7.
    // Also `AzureOpenAI` (Part C), which names AZURE_OPENAI_API_KEY on the same line.
    config(
        Literal("Missing credentials. Please pass"),
        "OpenAI SDK",
        &["OPENAI_API_KEY"],
        true,
    ),
    // anthropic-python 2.12.0 (as a TypeError) and @anthropic-ai/sdk 1.12.0, unset
    // or empty key, raised at the first request: observed, auth-signatures.md §5.5.
    config(
        Literal("Could not resolve authentication method"),
        "Anthropic SDK",
        &["ANTHROPIC_API_KEY"],
        false,
    ),
    // openai-python <= 2.33 and groq-python 1.6.0: read in Part C (not run).
    config(
        Literal("The api_key client option must be set"),
        "OpenAI/Groq Python SDK",
        &["OPENAI_API_KEY"],
        true,
    ),
    // openai-node v4 (`The OPENAI_API_KEY environment variable is missing or
    // empty`), and the Azure client's OPENAI_API_VERSION: read in Part C (not run).
    config(
        Literal("environment variable is missing or empty"),
        "OpenAI Node SDK v4",
        &["OPENAI_API_KEY"],
        true,
    ),
    // OpenAI server body when no Authorization header was sent (openai-python
    // 1.92.3 – 2.33 with an empty key): Part C; not produced by current SDKs (§7).
    config(
        Literal("You didn't provide an API key"),
        "OpenAI API",
        &["OPENAI_API_KEY"],
        false,
    ),
    // Anthropic server body without a credential header: Part C (server body).
    config(
        Literal("x-api-key header is required"),
        "Anthropic API",
        &["ANTHROPIC_API_KEY"],
        false,
    ),
    // google-genai (Python) >= 1.65, no key: read in Part C. It prefers
    // GOOGLE_API_KEY over GEMINI_API_KEY.
    config(
        Literal("No API key was provided"),
        "google-genai",
        &["GOOGLE_API_KEY", "GEMINI_API_KEY"],
        false,
    ),
    // google-genai (Python) < 1.65, no key: read in Part C.
    config(
        Literal("Missing key inputs argument"),
        "google-genai",
        &["GOOGLE_API_KEY", "GEMINI_API_KEY"],
        false,
    ),
    // google-generativeai (deprecated) `DefaultCredentialsError`: read in Part C. The
    // message itself names GOOGLE_API_KEY; the line also holds `API_KEY`, so the name
    // is fixed rather than parsed.
    config(
        Literal("No API_KEY or ADC found"),
        "google-generativeai",
        &["GOOGLE_API_KEY", "GEMINI_API_KEY"],
        false,
    ),
    // Google server, 403 PERMISSION_DENIED when no key is sent at all: Part C
    // ("Google (server) variants"). Not to be confused with SERVICE_DISABLED.
    config(
        Literal("Method doesn't allow unregistered callers"),
        "Google API",
        &["GOOGLE_API_KEY", "GEMINI_API_KEY"],
        false,
    ),
    // LangChain pydantic-v1 `get_from_env` (`Did not find openai_api_key, please add
    // an environment variable `OPENAI_API_KEY` …`): Part C.
    config(Pattern("Did not find .*_api_key"), "LangChain", &[], true),
    // cohere-python `base_client.py`, typo included: Part C.
    config(
        Literal("The client must be instantiated be either passing in token or setting CO_API_KEY"),
        "Cohere SDK",
        &["CO_API_KEY"],
        false,
    ),
    // openai-python `AzureOpenAI` without an API version: Part C (`lib/azure.py`).
    config(
        Literal("Must provide either the"),
        "AzureOpenAI",
        &["OPENAI_API_VERSION"],
        true,
    ),
    // openai-python `AzureOpenAI` without an endpoint: Part C (`lib/azure.py`).
    config(
        Literal("Must provide one of the"),
        "AzureOpenAI",
        &["AZURE_OPENAI_ENDPOINT"],
        true,
    ),
    // --- auth ------------------------------------------------------------------
    // OpenAI 401 message, observed in all 7 OpenAI-based clients (wrong and quoted
    // key), auth-signatures.md §7; also xAI's 400 (Part C). Carries the fingerprint.
    auth(
        Literal("Incorrect API key provided"),
        "OpenAI-compatible API",
    ),
    // Anthropic 401 message, observed in anthropic 2.12.0 and @anthropic-ai/sdk
    // 1.12.0 (auth-signatures.md §7).
    auth(Literal("invalid x-api-key"), "Anthropic API"),
    // Anthropic 401 for a rejected Bearer credential, observed (case b2, §5.9).
    auth(Literal("Invalid bearer token"), "Anthropic API"),
    // Azure OpenAI 401, wrong key or an OpenAI key sent to Azure: Part C.
    auth(
        Literal("Access denied due to invalid subscription key or wrong API endpoint"),
        "Azure OpenAI",
    ),
    // Azure OpenAI 401 with an expired or wrong Entra token: Part C.
    auth(
        Literal("Access token is missing, invalid, audience is incorrect"),
        "Azure OpenAI (Entra ID)",
    ),
    // Google 400 INVALID_ARGUMENT message (google-genai, the deprecated SDK,
    // langchain-google-genai, Gemini's OpenAI-compatible endpoint): Part C.
    auth(Literal("API key not valid"), "Google API"),
    // Google error reason, in the same 400 bodies and in `API Key not found`: Part C.
    auth(Literal("API_KEY_INVALID"), "Google API"),
    // Groq 401 message: Part C.
    auth(Literal("Invalid API Key"), "Groq API"),
    // Cohere 401 body: Part C.
    auth(Literal("invalid api token"), "Cohere API"),
    // mistralai 1.x (`API error occurred: Status 401\n{…}`) and >= 1.9.11 / 2.x
    // (`… Status 401. Body: …`): Part C. The SDK prefix is required because a bare
    // 401 is not enough, and `\b` keeps `Status 4010` out.
    auth(Pattern(r"API error occurred: Status 401\b"), "Mistral SDK"),
    // LangChain.js `lc_error_code` and troubleshooting URL, observed in
    // @langchain/langgraph 1.7.3 + @langchain/openai 1.5.8 (§5.3).
    auth(Literal("MODEL_AUTHENTICATION"), "LangChain.js"),
    // OpenAI/Groq error code: the Node object dump `code: 'invalid_api_key'`
    // (observed, openai 6.49.0, LangGraph.js) and Python dict reprs (openai-python
    // < 3, groq; Part C).
    auth(Literal("'invalid_api_key'"), "OpenAI-compatible API"),
    // The same code in JSON quoting (raw bodies, logged responses): Part C.2.
    auth(Literal("\"invalid_api_key\""), "OpenAI-compatible API"),
    // Anthropic error type in dict repr and JSON, observed in both Anthropic clients.
    auth(Literal("authentication_error"), "Anthropic API"),
    // cohere-python `UnauthorizedError` class: Part C.
    auth(Literal("UnauthorizedError"), "Cohere SDK"),
    // The class name in every module prefix: observed in all 9 clients, including
    // `OpenAIAuthenticationError`, AutoGen teams' `RuntimeError: AuthenticationError:`
    // and tenacity's `RetryError[… raised AuthenticationError]` (§7, Part C).
    auth(
        Literal("AuthenticationError"),
        "OpenAI/Anthropic SDK and wrappers",
    ),
];

/// One compiled regex per table entry (`None` for literals), built once.
static COMPILED: LazyLock<Vec<Option<Regex>>> = LazyLock::new(|| {
    SIGNATURES
        .iter()
        .map(|sig| match sig.needle {
            Needle::Literal(_) => None,
            Needle::Pattern(src) => Some(Regex::new(src).expect("built-in signature regex")),
        })
        .collect()
});

/// An environment variable name as SDK messages print it (`OPENAI_API_KEY`): upper
/// case with at least one underscore, so mixed-case key material never qualifies.
static VAR_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b").expect("variable-name regex")
});

/// The OpenAI/xAI message that echoes a masked key (auth-signatures.md §7).
const ECHO_PREFIX: &str = "Incorrect API key provided: ";

/// The part of `tail` that classification looks at: the last [`TAIL_MAX_BYTES`]
/// bytes (cut on a character boundary), then the last [`TAIL_MAX_LINES`] lines of
/// those. A trailing newline does not count as a line.
pub(crate) fn tail_window(tail: &str) -> &str {
    let mut start = tail.len().saturating_sub(TAIL_MAX_BYTES);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    let window = &tail[start..];
    let body = window.strip_suffix('\n').unwrap_or(window);
    let mut newlines = 0;
    for (i, byte) in body.bytes().enumerate().rev() {
        if byte == b'\n' {
            newlines += 1;
            if newlines == TAIL_MAX_LINES {
                return &window[i + 1..];
            }
        }
    }
    window
}

/// Classifies a finished run (SPEC 5).
///
/// Order: a requested stop is `ok`; status 0 is `ok`; a signal agentsup did not send
/// is `crash`; a status in `auth.exit_codes` is `auth`; then the output window is
/// scanned for malformed, config, user `auth.patterns`, and built-in auth signatures,
/// in that order; anything else is `crash`.
pub(crate) fn classify(input: &ClassifyInput<'_>) -> Classification {
    let status = input.termination;
    if input.was_stop_requested {
        return Classification::status_only(
            ExitClass::Ok,
            format!("ended with {status} after agentsup asked it to stop"),
        );
    }
    let code = match status {
        Termination::Exited(0) => {
            return Classification::status_only(ExitClass::Ok, "exited with status 0".into());
        }
        Termination::Signaled(_) => {
            return Classification::status_only(
                ExitClass::Crash,
                format!("killed by {status}, which agentsup did not send"),
            );
        }
        Termination::Exited(code) => code,
    };
    let window = tail_window(input.tail);

    if input.exit_codes.contains(&code) {
        let fingerprint = fingerprint(window, input.injected);
        let mut reason = format!("exit status {code} is listed in auth.exit_codes");
        push_fingerprint_note(&mut reason, fingerprint.as_ref());
        return Classification {
            class: ExitClass::Auth,
            reason,
            signature: None,
            tier: None,
            wanted_var: None,
            fingerprint,
        };
    }

    if let Some(found) = scan(window, Tier::Malformed).or_else(|| scan(window, Tier::Config)) {
        return classify_config(found, window, input);
    }

    for pattern in input.patterns {
        if let Some(m) = pattern.find_iter(window).last() {
            let fingerprint = fingerprint(window, input.injected);
            let mut reason = format!(
                "matched auth.patterns `{}` {}",
                pattern.as_str(),
                place(window, m.end())
            );
            push_fingerprint_note(&mut reason, fingerprint.as_ref());
            return Classification {
                class: ExitClass::Auth,
                reason,
                signature: None,
                tier: Some(Tier::Auth),
                wanted_var: None,
                fingerprint,
            };
        }
    }

    if let Some(found) = scan(window, Tier::Auth) {
        let fingerprint = fingerprint(window, input.injected);
        let mut reason = format!(
            "matched `{}` ({}) {}: the provider rejected a credential",
            found.signature_text(),
            found.sig.origin,
            place(window, found.end)
        );
        push_fingerprint_note(&mut reason, fingerprint.as_ref());
        return Classification {
            class: ExitClass::Auth,
            reason,
            signature: Some(found.signature_text()),
            tier: Some(Tier::Auth),
            wanted_var: None,
            fingerprint,
        };
    }

    let lines = window.lines().count();
    Classification::status_only(
        ExitClass::Crash,
        format!(
            "exited with status {code}; no auth or config signature in its last {lines} lines of output"
        ),
    )
}

/// A signature found in the window: the table entry and where its last match is.
struct Found {
    sig: &'static Signature,
    start: usize,
    end: usize,
}

impl Found {
    fn signature_text(&self) -> &'static str {
        match self.sig.needle {
            Needle::Literal(s) | Needle::Pattern(s) => s,
        }
    }
}

/// The first entry of `tier` (table order) that occurs in `window`, at its last
/// occurrence: the one nearest the end is the one that killed the process.
fn scan(window: &str, tier: Tier) -> Option<Found> {
    SIGNATURES
        .iter()
        .zip(COMPILED.iter())
        .filter(|(sig, _)| sig.tier == tier)
        .find_map(|(sig, compiled)| {
            let (start, end) = match (&sig.needle, compiled) {
                (Needle::Literal(lit), _) => window.rfind(lit).map(|s| (s, s + lit.len()))?,
                (Needle::Pattern(_), Some(re)) => {
                    let m = re.find_iter(window).last()?;
                    (m.start(), m.end())
                }
                (Needle::Pattern(_), None) => return None,
            };
            Some(Found { sig, start, end })
        })
}

fn classify_config(found: Found, window: &str, input: &ClassifyInput<'_>) -> Classification {
    let signature = found.signature_text();
    let head = format!(
        "matched `{signature}` ({}) {}",
        found.sig.origin,
        place(window, found.end)
    );
    let (reason, wanted_var) = match found.sig.tier {
        // "Restarting cannot help" is the replica's to add (it does for every config
        // class exit), so neither reason says it.
        Tier::Malformed => {
            let (note, culprit) = malformed_note(window, input.injected);
            (
                format!(
                    "{head}: the HTTP client refused to send a credential holding whitespace or \
                     a control character; {note}"
                ),
                culprit,
            )
        }
        _ => {
            let wanted = wanted_var(found.sig, window, found.start);
            let reason = match &wanted {
                Some(var) => format!("{head}: the SDK found no credential (it wants {var})"),
                None => format!("{head}: the SDK found no credential"),
            };
            (reason, wanted)
        }
    };
    Classification {
        class: ExitClass::Config,
        reason,
        signature: Some(signature),
        tier: Some(found.sig.tier),
        wanted_var,
        fingerprint: None,
    }
}

/// "on the last line" / "3 lines before the end": how far from the end the match
/// is, counting non-empty lines, so the reason shows why a window is needed.
fn place(window: &str, match_end: usize) -> String {
    let after = window[match_end..]
        .split('\n')
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count();
    match after {
        0 => "on the last line".into(),
        1 => "1 line before the end".into(),
        n => format!("{n} lines before the end"),
    }
}

/// The whole line of `window` that contains byte offset `at`.
fn line_at(window: &str, at: usize) -> &str {
    let start = window[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = window[at..].find('\n').map_or(window.len(), |i| at + i);
    &window[start..end]
}

/// The variable a config-tier message asks for: read off the matched line when the
/// SDK names it there (first env-var-shaped token, the SDK lists its primary
/// variable first), else the entry's default.
fn wanted_var(sig: &Signature, window: &str, at: usize) -> Option<String> {
    if sig.parse_var {
        let line = line_at(window, at);
        if let Some(m) = VAR_NAME
            .find_iter(line)
            .find(|m| m.as_str().len() <= 64 && m.as_str() != "API_KEY")
        {
            return Some(m.as_str().to_owned());
        }
    }
    sig.wants.first().map(|s| (*s).to_owned())
}

/// For a malformed-key exit (`Illegal header value`): which declared variables could hold the credential the
/// client refused, as a clause of the reason, and the one to report as
/// `wanted_var`. Names only: `injected` holds exactly the worker's declared keys as
/// that run was started with them. The candidates are every value with
/// surrounding whitespace or a control character; failing that, the one whose
/// (trimmed) value is in the refused header (httpx prints it whole, §5.6); failing
/// that, the clause lists the keys that were checked.
fn malformed_note(window: &str, injected: &[(String, Sensitive)]) -> (String, Option<String>) {
    let dirty: Vec<&str> = injected
        .iter()
        .filter(|(_, value)| {
            let raw = value.expose();
            raw != raw.trim() || raw.chars().any(char::is_control)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if let Some(first) = dirty.first() {
        let (names, verb) = match dirty.as_slice() {
            [one] => ((*one).to_string(), "holds"),
            many => (join_and(many), "hold"),
        };
        return (
            format!(
                "the worker declares {names}, which as injected {verb} surrounding whitespace or \
                 a control character: check with `agentsup check`"
            ),
            Some((*first).to_string()),
        );
    }
    let echoed = injected.iter().find(|(_, value)| {
        let trimmed = value.expose().trim();
        trimmed.len() >= 8 && window.contains(trimmed)
    });
    if let Some((name, _)) = echoed {
        return (
            format!(
                "the refused header holds the value of {name}, which the worker declares and \
                 which was injected without it, so the worker alters the value before sending it"
            ),
            Some(name.clone()),
        );
    }
    let note = if injected.is_empty() {
        "the worker declares no key that was set when it started, so none could be checked; \
         the credential comes from elsewhere (hard-coded, the worker's own .env, or an \
         undeclared variable)"
            .to_string()
    } else {
        let names: Vec<&str> = injected.iter().map(|(name, _)| name.as_str()).collect();
        format!(
            "no declared key holds surrounding whitespace or a control character as injected \
             (checked {}), so the credential comes from elsewhere (hard-coded, the worker's own \
             .env, or an undeclared variable) or the worker alters it",
            join_and(&names)
        )
    };
    (note, None)
}

/// `A`, `A and B`, `A, B and C`.
fn join_and(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn push_fingerprint_note(reason: &mut String, fingerprint: Option<&Fingerprint>) {
    match fingerprint {
        Some(Fingerprint::InjectedKeyRejected { key }) => reason.push_str(&format!(
            "; the key it echoed is the injected {key} (revoked or rotated?)"
        )),
        Some(Fingerprint::OtherKeySent) => reason.push_str(
            "; the key it echoed is none agentsup injected (hard-coded, the worker's own \
             .env, or an undeclared variable)",
        ),
        None => {}
    }
}

/// Compares the masked key an OpenAI-compatible provider echoed (the last one in the
/// window) with the injected values. `None` when nothing usable was echoed.
fn fingerprint(window: &str, injected: &[(String, Sensitive)]) -> Option<Fingerprint> {
    let pos = window.rfind(ECHO_PREFIX)?;
    let rest = &window[pos + ECHO_PREFIX.len()..];
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    // OpenAI: "… provided: <echo>. You can find …"; xAI: "… <echo>. You can obtain …".
    let echoed = match line.find(". You can") {
        Some(end) => &line[..end],
        None => line.split_whitespace().next()?.trim_end_matches(['.', ',']),
    };
    if echoed.is_empty() || echoed.len() > 256 {
        return None;
    }
    let mask = Mask::parse(echoed)?;
    Some(
        injected
            .iter()
            .find(|(_, value)| mask.matches(value.expose()))
            .map_or(Fingerprint::OtherKeySent, |(name, _)| {
                Fingerprint::InjectedKeyRejected { key: name.clone() }
            }),
    )
}

/// A parsed echo. Borrowed from the output only for the comparison, never stored.
enum Mask<'a> {
    /// `sk-proj-****…WXYZ`, `xx***yy`, `sk-abc12***…***wxyz`.
    Edges { prefix: &'a str, suffix: &'a str },
    /// Keys of at most 12 characters are echoed whole (auth-signatures.md §2).
    Whole(&'a str),
}

impl<'a> Mask<'a> {
    fn parse(echoed: &'a str) -> Option<Self> {
        let s = strip_quotes(echoed.trim());
        let is_mask = |c: char| c == '*' || c == '…';
        match (s.find(is_mask), s.rfind(is_mask)) {
            (Some(first), Some(last)) => {
                let last_len = s[last..].chars().next().map_or(1, char::len_utf8);
                let prefix = &s[..first];
                let suffix = &s[last + last_len..];
                // Fewer visible characters than xAI's 2 + 2 tell nothing.
                (prefix.len() + suffix.len() >= 4).then_some(Mask::Edges { prefix, suffix })
            }
            _ => (!s.is_empty()).then_some(Mask::Whole(s)),
        }
    }

    /// True when `value` could have produced this echo. The star count is ignored:
    /// it need not equal the hidden length in every SDK version (Part C shows
    /// `***…***`). Quotes are stripped on both sides, because a quoted value is sent
    /// verbatim and its quotes land inside the visible edges (§5.7).
    fn matches(&self, value: &str) -> bool {
        let value = strip_quotes(value.trim());
        match *self {
            Mask::Edges { prefix, suffix } => {
                value.len() >= prefix.len() + suffix.len()
                    && value.starts_with(prefix)
                    && value.ends_with(suffix)
            }
            Mask::Whole(whole) => value == whole,
        }
    }
}

fn strip_quotes(s: &str) -> &str {
    let s = s.strip_prefix(['"', '\'']).unwrap_or(s);
    s.strip_suffix(['"', '\'']).unwrap_or(s)
}

#[cfg(test)]
mod tests;
