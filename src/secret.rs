//! Values that may be secret, where each came from, and how one may be shown.
//!
//! A [`Sensitive`] holds any environment value agentsup handles. Its `Debug` and
//! `Display` never print the value, so a stray `{:?}` in a log line or a panic
//! message cannot leak it; the only way out is [`Sensitive::expose`], which is
//! greppable. `mask` is the one rule (SPEC 4) for showing part of a value.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// A value read from a source or built for a worker. Cloning copies the secret,
/// which is unavoidable (std copies env values into `CString`s for `execve` too).
#[derive(Clone)]
pub struct Sensitive(SecretString);

impl Sensitive {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Sensitive(SecretString::from(value.into()))
    }

    /// The plain value. Call sites are the audit list of where values leave.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in bytes, safe to print.
    pub(crate) fn len(&self) -> usize {
        self.expose().len()
    }
}

impl PartialEq for Sensitive {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Sensitive {}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sensitive(<{} bytes>)", self.len())
    }
}

/// Where a value came from, printed in reports as `.env:3`, `/run/secrets/X`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// A line of a dotenv file (1-based).
    Dotenv {
        /// The file.
        path: PathBuf,
        /// 1-based line where the record starts.
        line: usize,
    },
    /// A file in a `dir` source (Docker / Kubernetes secret).
    SecretFile {
        /// The file.
        path: PathBuf,
    },
    /// The output of a `command` source.
    Command {
        /// The program name (argv\[0]); never the arguments, which may hold tokens.
        program: String,
    },
    /// agentsup's own process environment (`env` source or `inherit`).
    ProcessEnv,
    /// `X` read from the file named by `X_FILE`.
    FileIndirection {
        /// The `*_FILE` variable that named the file.
        via: String,
        /// Where that variable came from.
        via_source: Box<Provenance>,
        /// The file read.
        path: PathBuf,
    },
    /// `[env].vars` in the config.
    GlobalVars,
    /// The worker's own `vars`.
    WorkerVars,
    /// A variable agentsup itself sets (`AGENTSUP_*`, `PYTHONUNBUFFERED`, …).
    Agentsup,
}

impl Provenance {
    /// True for sources that exist to carry secrets (SPEC 7: `dir`, `command`, `env`).
    pub(crate) fn is_secret_source(&self) -> bool {
        match self {
            Provenance::SecretFile { .. }
            | Provenance::Command { .. }
            | Provenance::ProcessEnv
            | Provenance::FileIndirection { .. } => true,
            Provenance::Dotenv { .. }
            | Provenance::GlobalVars
            | Provenance::WorkerVars
            | Provenance::Agentsup => false,
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Dotenv { path, line } => {
                write!(f, "{}:{line}", crate::paths::tidy(path).display())
            }
            Provenance::SecretFile { path } => write!(f, "{}", crate::paths::tidy(path).display()),
            Provenance::Command { program } => write!(f, "command `{program}`"),
            Provenance::ProcessEnv => f.write_str("process env"),
            Provenance::FileIndirection { via, path, .. } => {
                write!(f, "{} (via {via})", crate::paths::tidy(path).display())
            }
            Provenance::GlobalVars => f.write_str("[env] vars"),
            Provenance::WorkerVars => f.write_str("worker vars"),
            Provenance::Agentsup => f.write_str("agentsup"),
        }
    }
}

/// Name endings that mark a variable secret (SPEC 7, widened by issue 12):
/// `DB_PASS`, `SENTRY_DSN`, `MAPS_APIKEY`, `GPG_PASSPHRASE`, `BASIC_AUTH`.
const SECRET_SUFFIXES: &[&str] = &[
    "_KEY",
    "_TOKEN",
    "_SECRET",
    "_DSN",
    "_PASS",
    "_PASSWD",
    "_PWD",
    "_APIKEY",
    "_PASSPHRASE",
    "_AUTH",
];

/// Words that mark a variable secret wherever they are in its name:
/// `GOOGLE_APPLICATION_CREDENTIALS`, `AWS_SECRET_ACCESS_KEY_ID`, `SSH_PRIVATE_KEY_B64`.
const SECRET_WORDS: &[&str] = &["PASSWORD", "CREDENTIAL", "PRIVATE_KEY", "SECRET", "APIKEY"];

/// Whole names that are secret on their own. `PWD` (the shell's directory) and
/// `PASSWD` (usually a path) are not.
const SECRET_NAMES: &[&str] = &["API_KEY", "TOKEN", "DSN", "AUTH_TOKEN"];

/// True when a variable's name alone marks it secret (SPEC 7). Any case.
pub(crate) fn name_looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
        || SECRET_WORDS.iter().any(|w| upper.contains(w))
        || SECRET_NAMES.contains(&upper.as_str())
}

/// Shows a value the only way SPEC 4 allows: first 4 and last 4 characters and the
/// length, and only when the value has at least 20 characters; otherwise only the length.
pub(crate) fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= 20 {
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        let head = head.escape_debug().to_string();
        let tail = tail.escape_debug().to_string();
        format!("{head}…{tail} ({} chars)", chars.len())
    } else {
        format!("*** ({} chars)", chars.len())
    }
}

/// What replaces credential-shaped text in agentsup's own messages.
pub(crate) const SHAPE_HIDDEN: &str = "[credential-shaped text not shown]";

/// `text` with every run shaped like a well-known credential (OpenAI and
/// Anthropic keys, GitHub, GitLab, Slack, Hugging Face and Google API tokens, AWS
/// access key ids, JWTs) replaced by [`SHAPE_HIDDEN`], whether or not a source
/// loaded it: a key pasted into the wrong field of the config (`user`, `health`,
/// a source `path`) is quoted back by the error about that field, and no source
/// registered it for redaction. For agentsup's own messages (errors, the check
/// report, panics), never for a worker's output, where redaction is by value.
///
/// Hand-written rather than one `regex`: that pattern kept about 0.9 MB resident
/// for the whole run (measured with 20 idle workers: 9.9 MB against 9.0 MB), for
/// text printed a few times. A scan for each prefix does the same in no memory.
pub(crate) fn hide_credential_shapes(text: &str) -> std::borrow::Cow<'_, str> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for shape in SHAPES {
        for (start, _) in text.match_indices(shape.prefix) {
            if let Some(end) = shape.matches_at(text, start) {
                spans.push((start, end));
            }
        }
    }
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            // Inside a span already hidden (`sk-` within a longer match).
            at = at.max(end);
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(SHAPE_HIDDEN);
        at = end;
    }
    out.push_str(&text[at..]);
    std::borrow::Cow::Owned(out)
}

/// One well-known credential format: a prefix, then a run of `body` characters.
struct Shape {
    prefix: &'static str,
    body: fn(u8) -> bool,
    /// Fewest body characters after the prefix.
    min: usize,
    /// Most body characters (`AKIA` ids are exactly 16); `usize::MAX` if open.
    max: usize,
    /// Not followed by a word character either (short, fixed formats).
    standalone: bool,
}

impl Shape {
    /// Where the credential starting at `start` ends, if one does.
    fn matches_at(&self, text: &str, start: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let from = start + self.prefix.len();
        let len = bytes[from..]
            .iter()
            .take_while(|&&b| (self.body)(b))
            .count();
        if len < self.min || len > self.max {
            return None;
        }
        let end = from + len;
        let word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        // A credential starts a word (`task-generation-pool-worker-x` holds no
        // `sk-` key); the fixed-length ones end one too.
        let glued_before = start > 0 && word(bytes.get(start - 1));
        if glued_before || self.standalone && word(bytes.get(end)) {
            return None;
        }
        if self.prefix == "eyJ" {
            // A JWT: three dot-separated base64url parts of 8 or more.
            let parts: Vec<&str> = text[start..end].split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.len() < 8) {
                return None;
            }
        }
        Some(end)
    }
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn alnum_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn jwt_char(b: u8) -> bool {
    token_char(b) || b == b'.'
}

const fn shape(prefix: &'static str, body: fn(u8) -> bool, min: usize) -> Shape {
    Shape {
        prefix,
        body,
        min,
        max: usize::MAX,
        standalone: false,
    }
}

/// OpenAI and Anthropic keys, GitHub, GitLab, Slack, Hugging Face and Google API
/// tokens, AWS access key ids, JWTs.
const SHAPES: &[Shape] = &[
    shape("sk-", token_char, 20),
    shape("ghp_", alnum, 30),
    shape("gho_", alnum, 30),
    shape("ghu_", alnum, 30),
    shape("ghs_", alnum, 30),
    shape("ghr_", alnum, 30),
    shape("github_pat_", alnum_underscore, 30),
    shape("glpat-", token_char, 20),
    shape("xoxa-", token_char, 10),
    shape("xoxb-", token_char, 10),
    shape("xoxp-", token_char, 10),
    shape("xoxo-", token_char, 10),
    shape("xoxr-", token_char, 10),
    shape("xoxs-", token_char, 10),
    shape("hf_", alnum, 30),
    shape("AIza", token_char, 35),
    Shape {
        max: 16,
        standalone: true,
        ..shape("AKIA", upper_digit, 16)
    },
    Shape {
        max: 16,
        standalone: true,
        ..shape("ASIA", upper_digit, 16)
    },
    shape("eyJ", jwt_char, 26),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_shapes_are_hidden_in_messages_and_hints_are_not() {
        let key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        let text = format!("user \"{key}\" does not exist; dir /tmp/jt/{key} failed");
        let shown = hide_credential_shapes(&text);
        assert!(!shown.contains("AbCdEfGh"), "{shown}");
        assert_eq!(shown.matches(SHAPE_HIDDEN).count(), 2, "{shown}");
        for other in [
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-123456789012-abcdefghij",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
            "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
        ] {
            assert_eq!(hide_credential_shapes(other), SHAPE_HIDDEN, "{other}");
        }
        // What agentsup itself says about keys is left alone.
        for hint in [
            "an OpenAI key (it starts with `sk-`)",
            "sk-a…wxyz (29 chars)",
            "OPENAI_API_KEY is set in .env:3",
            "sk-ant-… is an Anthropic key",
            "worker \"task-generation-pool-worker-x\" failed",
            "AKIAIOSFODNN7EXAMPLEXYZ is too long for an id",
        ] {
            assert_eq!(hide_credential_shapes(hint), hint);
        }
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Sensitive::new("sk-supersecretvalue");
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn mask_shows_edges_only_for_long_values() {
        assert_eq!(
            mask("sk-abcdefghijklmnopqrstuvwxyz"),
            "sk-a…wxyz (29 chars)"
        );
        assert_eq!(mask("short-secret"), "*** (12 chars)");
    }

    #[test]
    fn secret_names() {
        assert!(name_looks_secret("OPENAI_API_KEY"));
        assert!(name_looks_secret("GITHUB_TOKEN"));
        assert!(name_looks_secret("DB_PASSWORD_X"));
        assert!(!name_looks_secret("MODEL"));
    }
}
