//! The serde mirror of `supervisor.toml` (SPEC 2), and nothing more.
//!
//! Structs here follow the file exactly and keep spans ([`toml::Spanned`]) where a
//! later semantic error must point at a line. Validation and defaults live in
//! [`crate::plan`]. Tagged, untagged and flattened enums are avoided on purpose:
//! they make serde buffer the input and toml then reports errors at the table header
//! instead of the field (see `reference/crates.md` §3).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

mod describe;

pub(crate) use describe::nearest;

use crate::diag::Located;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[supervisor]`.
    #[serde(default)]
    pub supervisor: SupervisorSection,
    /// `[env]`.
    #[serde(default)]
    pub env: EnvSection,
    /// `[[source]]`, in order; later sources override earlier ones.
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<SourceEntry>>,
    /// `[keys.NAME]` rules.
    #[serde(default)]
    pub keys: BTreeMap<Spanned<String>, KeyRule>,
    /// `[[worker]]`.
    #[serde(default, rename = "worker")]
    pub workers: Vec<Spanned<WorkerEntry>>,
}

/// `[supervisor]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    /// Grace between the stop signal and SIGKILL for the whole shutdown.
    pub shutdown_timeout: Option<HumanDuration>,
    /// `pretty` or `json`.
    pub log_format: Option<LogFormat>,
    /// Address of the HTTP health/metrics endpoint.
    pub health: Option<Spanned<String>>,
    /// What happens when a worker fails for good.
    pub on_give_up: Option<OnGiveUp>,
    /// How running replicas take changed keys (the default of every worker's own
    /// `on_rotation`): `restart`, `signal`, `file` or `next-start`.
    pub on_rotation: Option<OnRotation>,
    /// Probe every provider key before starting (`check --probe` on every `run`).
    pub probe: Option<bool>,
}

/// Output format for worker lines and supervisor events (SPEC 7).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// `planner.0 | text`.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[supervisor] on_give_up`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnGiveUp {
    /// Stop everything and exit 1 (the container restarts, Kubernetes sees it).
    #[default]
    Exit,
    /// Keep the other workers running; the failed one stays failed.
    Keep,
}

/// `on_rotation`, in `[supervisor]` (every worker's default) or a `[[worker]]`
/// (issue 14): how a running replica takes keys that changed.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnRotation {
    /// Restart replicas whose environment changed, one at a time.
    #[default]
    Restart,
    /// Write the key files (as `file`) and send `reload_signal` to each running
    /// replica, which re-reads them; no restart.
    Signal,
    /// Keep each declared key in `$AGENTSUP_KEYS_DIR/NAME`, replaced in place;
    /// no restart, no signal.
    File,
    /// Leave running replicas alone; new values apply at their next start.
    NextStart,
}

impl OnRotation {
    /// True for the modes that keep the key files (`file`, `signal`).
    pub(crate) fn writes_files(self) -> bool {
        matches!(self, OnRotation::File | OnRotation::Signal)
    }

    /// The spelling in `supervisor.toml`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OnRotation::Restart => "restart",
            OnRotation::Signal => "signal",
            OnRotation::File => "file",
            OnRotation::NextStart => "next-start",
        }
    }
}

/// `[env]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Names (globs allowed) copied from agentsup's own environment into every worker.
    pub inherit: Option<Vec<Spanned<String>>>,
    /// Literal, non-secret variables for every worker.
    #[serde(default)]
    pub vars: BTreeMap<Spanned<String>, String>,
    /// Let workers load `.env` files themselves (unsets `PYTHON_DOTENV_DISABLED`).
    #[serde(default)]
    pub worker_dotenv: bool,
}

/// The kind of a `[[source]]`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A `.env` file.
    Dotenv,
    /// A directory with one file per key.
    Dir,
    /// A command whose stdout holds the values.
    Command,
    /// agentsup's own environment.
    Env,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Dotenv => "dotenv",
            SourceKind::Dir => "dir",
            SourceKind::Command => "command",
            SourceKind::Env => "env",
        })
    }
}

/// Output format of a `command` source.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CommandFormat {
    /// dotenv lines.
    #[default]
    Dotenv,
    /// A JSON object of strings (optionally under `json_pointer`).
    Json,
}

/// One `[[source]]`, flat on purpose (see the module docs); [`crate::plan`] checks
/// that only the fields of its kind are set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    /// `dotenv | dir | command | env`.
    #[serde(rename = "type")]
    pub kind: Spanned<SourceKind>,
    /// File or directory (dotenv, dir).
    pub path: Option<Spanned<String>>,
    /// A missing optional source is not an error.
    pub optional: Option<bool>,
    /// argv of a command source (no shell).
    pub command: Option<Spanned<Vec<String>>>,
    /// stdout format of a command source.
    pub format: Option<Spanned<CommandFormat>>,
    /// JSON pointer (RFC 6901) to the object holding the values.
    pub json_pointer: Option<Spanned<String>>,
    /// Timeout of a command source.
    pub timeout: Option<Spanned<HumanDuration>>,
    /// Largest file a dotenv or dir source reads (`"64KiB"`, `"1MiB"`).
    pub max_size: Option<Spanned<String>>,
    /// Names (or globs) of agentsup's own variables a command source gets besides
    /// the `[env] inherit` set (`VAULT_ADDR`, `VAULT_TOKEN`).
    pub env: Option<Vec<Spanned<String>>>,
    /// A command source runs again this often while agentsup runs (issue 14).
    pub refresh: Option<Spanned<HumanDuration>>,
    /// JSON pointer to a lease length in seconds in the command's output; the
    /// source runs again at two thirds of it (Vault's `/lease_duration`).
    pub ttl_pointer: Option<Spanned<String>>,
    /// The user a command source's helper runs as: a name or a numeric uid
    /// (needs root), like a worker's `user`.
    pub user: Option<Spanned<crate::sys::creds::IdSpec>>,
    /// The group a command source's helper runs as (needs root).
    pub group: Option<Spanned<crate::sys::creds::IdSpec>>,
}

/// Providers with a known key shape (SPEC 4).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// OpenAI (`sk-…`).
    Openai,
    /// Azure OpenAI (key + `https://` endpoint + API version).
    AzureOpenai,
    /// Anthropic (`sk-ant-…`).
    Anthropic,
    /// Google AI (`AIza` + 35 characters).
    Google,
    /// No shape check.
    None,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Openai => "openai",
            Provider::AzureOpenai => "azure-openai",
            Provider::Anthropic => "anthropic",
            Provider::Google => "google",
            Provider::None => "none",
        })
    }
}

/// `[keys.NAME]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    /// Provider whose key shape the value must have.
    pub provider: Option<Provider>,
    /// Extra regex the value must match.
    pub pattern: Option<Spanned<String>>,
    /// Redact and mask this key regardless of its name or source.
    pub secret: Option<bool>,
}

/// `restart = …`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Restart after every exit, clean ones included.
    Always,
    /// Restart after `auth` and `crash` exits.
    #[default]
    OnFailure,
    /// Never restart.
    Never,
}

/// `stop_target = …` (issue 14): who receives the stop signal.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StopTarget {
    /// The worker's whole process group (the default; SPEC 5).
    #[default]
    Group,
    /// The worker's main process only, which stops its own children (Celery's
    /// prefork pool, gunicorn): the SIGKILL at the timeout still takes the group.
    Leader,
}

/// `start = …`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StartMode {
    /// fork+exec the command.
    #[default]
    Spawn,
    /// Fork from a preloaded Python template (SPEC 6).
    Fork,
}

/// `backoff = { … }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackoffEntry {
    /// First delay.
    pub initial: Option<HumanDuration>,
    /// Cap.
    pub max: Option<HumanDuration>,
    /// Growth per consecutive failure.
    pub multiplier: Option<Spanned<f64>>,
    /// Fraction of random spread, 0..=1.
    pub jitter: Option<Spanned<f64>>,
    /// A run this long resets the growth.
    pub reset_after: Option<HumanDuration>,
}

/// `ready = { … }`: exactly one of `http`, `exec`, `log`, `notify` (checked in
/// [`crate::plan`]).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadyEntry {
    /// `GET` this URL until it answers 2xx.
    pub http: Option<Spanned<String>>,
    /// Run this argv until it exits 0.
    pub exec: Option<Spanned<Vec<String>>>,
    /// Wait for an output line matching this regex.
    pub log: Option<Spanned<String>>,
    /// Wait for `READY=1` on `$NOTIFY_SOCKET`.
    pub notify: Option<Spanned<bool>>,
    /// How long a rolling restart waits for readiness.
    pub timeout: Option<HumanDuration>,
    /// Pause between `http` / `exec` attempts.
    pub interval: Option<HumanDuration>,
}

/// `auth = { … }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthEntry {
    /// Exit statuses that mean "credential rejected".
    pub exit_codes: Option<Vec<i32>>,
    /// Extra regexes over the output tail that mean "credential rejected".
    pub patterns: Option<Vec<Spanned<String>>>,
    /// Cap of the backoff while the credential stays rejected.
    pub max_delay: Option<HumanDuration>,
}

/// `[[worker]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerEntry {
    /// Unique name; used in prefixes, metrics and `AGENTSUP_WORKER`.
    pub name: Spanned<String>,
    /// argv; required for `start = "spawn"`.
    pub command: Option<Spanned<Vec<String>>>,
    /// Working directory, relative to the config file.
    pub cwd: Option<Spanned<String>>,
    /// Number of replicas.
    pub replicas: Option<Spanned<i64>>,
    /// Keys the worker needs: exact names are required, globs are optional extras.
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    /// Literal variables for this worker.
    #[serde(default)]
    pub vars: BTreeMap<Spanned<String>, String>,
    /// Restart policy.
    pub restart: Option<RestartMode>,
    /// Signal sent to the process group to stop it.
    pub stop_signal: Option<Spanned<SignalName>>,
    /// `group` (default) or `leader`: who gets the stop signal.
    pub stop_target: Option<StopTarget>,
    /// Grace before SIGKILL.
    pub stop_timeout: Option<HumanDuration>,
    /// How a running replica takes changed keys (default: `[supervisor]`'s).
    pub on_rotation: Option<Spanned<OnRotation>>,
    /// The signal `on_rotation = "signal"` sends (default SIGHUP).
    pub reload_signal: Option<Spanned<SignalName>>,
    /// How to tell that a replica is ready (issue 14).
    pub ready: Option<Spanned<ReadyEntry>>,
    /// `spawn` or `fork`.
    pub start: Option<Spanned<StartMode>>,
    /// Restart backoff.
    pub backoff: Option<BackoffEntry>,
    /// Consecutive crash-class runs before the replica is `failed`.
    pub max_restarts: Option<u32>,
    /// Auth-failure detection and pacing.
    pub auth: Option<AuthEntry>,
    /// Fork mode: modules the template imports.
    pub preload: Option<Vec<String>>,
    /// Fork mode: module run as `__main__` (`python -m`).
    pub module: Option<String>,
    /// Fork mode: script run as `__main__`.
    pub script: Option<String>,
    /// Fork mode: arguments (`sys.argv[1:]`).
    pub args: Option<Vec<String>>,
    /// Fork mode: the interpreter (default `python3` on the worker's PATH).
    pub python: Option<String>,
    /// The user the worker runs as: a name or a numeric uid (needs root).
    pub user: Option<Spanned<crate::sys::creds::IdSpec>>,
    /// The group the worker runs as: a name or a numeric gid (needs root).
    pub group: Option<Spanned<crate::sys::creds::IdSpec>>,
}

/// A duration written the humantime way (`10s`, `1m 30s`, `250ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // The text is not quoted back: a value pasted on the wrong line may be a key.
        let d = humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration (the value is not shown): {} (examples: \"10s\", \"500ms\", \"5m\", \"1h 30m\")",
                duration_problem(&e)
            ))
        })?;
        // Timers are `Instant + duration`; absurd values would overflow them.
        if d > Duration::from_secs(366 * 24 * 3600) {
            return Err(de::Error::custom(
                "duration is longer than a year (366 days); use a shorter one",
            ));
        }
        Ok(HumanDuration(d))
    }
}

/// What is wrong with a duration, in words that quote none of it.
fn duration_problem(e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    match e {
        E::InvalidCharacter(at) => format!("invalid character at position {}", at + 1),
        E::NumberExpected(at) => format!("a number was expected at position {}", at + 1),
        E::UnknownUnit { unit, .. } if unit.is_empty() => {
            "a time unit is needed after the number".to_string()
        }
        E::UnknownUnit { .. } => {
            "unknown time unit (use ms, s, m, h or d; also sec, min, hours, days)".to_string()
        }
        E::NumberOverflow => "the number is too large".to_string(),
        E::Empty => "the value is empty".to_string(),
    }
}

/// A signal given by name (`SIGTERM`, `TERM`, `sigterm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub nix::sys::signal::Signal);

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_signal(&text).map(SignalName).ok_or_else(|| {
            // Compared without the `SIG` every candidate shares, which alone
            // would make any `SIG…` look close.
            const COMMON: &[&str] = &["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL"];
            let upper = text.trim().to_ascii_uppercase();
            let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
            let hint = nearest(bare, COMMON)
                .map(|n| format!("; did you mean \"SIG{n}\"?"))
                .unwrap_or_default();
            de::Error::custom(format!(
                "unknown signal (the value is not shown); expected a name such as \"SIGTERM\", \"SIGINT\", \"SIGQUIT\" or \"SIGUSR1\"{hint}"
            ))
        })
    }
}

/// Parses `SIGTERM`, `TERM` or `sigterm`.
pub(crate) fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// Converts a byte offset into 1-based line and column.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Parses the text of `supervisor.toml`; a syntax or type error becomes one
/// [`Located`] naming line, column, the field and what was expected, never the
/// value (see `describe`).
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Located> {
    toml::from_str::<ConfigFile>(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Located {
            path: path.to_path_buf(),
            line,
            column,
            message: describe::message(text, e.span(), e.message().trim()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> Located {
        parse(Path::new("s.toml"), text).unwrap_err()
    }

    #[test]
    fn unknown_field_is_located() {
        let e = err("[supervisor]\nshutdwon_timeout = \"1s\"\n");
        assert_eq!(e.line, Some(2));
        assert!(
            e.message.contains("unknown field `shutdwon_timeout`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_duration_names_examples() {
        let e = err("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = \"10\"\n");
        assert_eq!(e.line, Some(4));
        assert!(
            e.message
                .contains("`stop_timeout` in `[[worker]]`: invalid duration")
                && e.message.contains("a time unit is needed"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_type_points_at_value() {
        let e = err("[[worker]]\nname = \"a\"\nreplicas = \"4\"\n");
        assert_eq!((e.line, e.column), (Some(3), Some(12)));
    }

    #[test]
    fn source_unknown_field_points_at_field() {
        let e = err("[[source]]\ntype = \"dir\"\npaht = \"x\"\n");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn signals_parse_in_any_spelling() {
        assert_eq!(
            parse_signal("TERM"),
            Some(nix::sys::signal::Signal::SIGTERM)
        );
        assert_eq!(
            parse_signal("sigint"),
            Some(nix::sys::signal::Signal::SIGINT)
        );
        assert_eq!(parse_signal("SIGBOGUS"), None);
    }
}
