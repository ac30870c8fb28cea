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
pub(crate) fn hide_credential_shapes(text: &str) -> std::borrow::Cow<'_, str> {
    static SHAPES: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        regex::Regex::new(concat!(
            r"sk-[A-Za-z0-9_\-]{20,}",
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}",
            r"|glpat-[A-Za-z0-9_\-]{20,}",
            r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
            r"|hf_[A-Za-z0-9]{30,}",
            r"|AIza[0-9A-Za-z_\-]{35}",
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        ))
        .expect("a valid pattern")
    });
    shapes.replace_all(text, SHAPE_HIDDEN)
}

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
