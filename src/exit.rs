//! The top-level error type and the documented exit codes (SPEC 1).
//!
//! Every failure that reaches `main` is an [`Error`]; [`Error::exit_code`] is the only
//! place that maps failures to codes, so the codes stay consistent across commands.

/// Exit codes of the `agentsup` binary (SPEC 1).
pub(crate) mod code {
    /// All workers stopped on request, or all finished cleanly.
    pub(crate) const OK: u8 = 0;
    /// A worker failed for good, or the supervisor hit a runtime fault.
    pub(crate) const FAILURE: u8 = 1;
    /// Usage error (clap uses the same code).
    pub(crate) const USAGE: u8 = 2;
    /// Configuration or secret validation failed; nothing was started (`EX_CONFIG`).
    pub(crate) const CONFIG: u8 = 78;
}

use std::path::PathBuf;

pub(crate) use crate::diag::Located;
use crate::paths::ConfigOrigin;

/// A typed cause carried by an [`Error`]: a module's own error (the control
/// client's, `init`'s, a spawn's), kept whole for its message and for tests.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Every failure that ends a command. Each variant carries what it is about; the
/// message is made from that when it is shown ([`Error::exit_code`] maps it to a
/// code). The fields named `cause` are shown in the message, not chained as
/// `source`: `main` prints one message, redacted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read (missing, a directory, no permission).
    #[error("cannot read config {}: {}{}", path.display(), io_reason(cause), origin_hint(*origin, cause))]
    ConfigUnreadable {
        /// The path as given or looked for.
        path: PathBuf,
        /// How it was found, for the hint; `None` when the caller named it itself.
        origin: Option<ConfigOrigin>,
        /// What reading it said.
        cause: std::io::Error,
    },
    /// `supervisor.toml` is malformed or inconsistent; all problems are listed.
    #[error("{}", render_list(.0))]
    Config(Vec<Located>),
    /// The config (or the `--only` selection) has no worker to run.
    #[error("{} defines no [[worker]]; add one with a name and a command", config.display())]
    NoWorkers {
        /// The config file.
        config: PathBuf,
    },
    /// A source could not be loaded or a required key failed its checks; the
    /// report has already been printed.
    #[error(
        "the checks above failed; nothing was started (fix them, then run again; `agentsup check` repeats the report)"
    )]
    ChecksFailed,
    /// The control socket could not be set up: another run supervises this
    /// config, or no place for the socket is usable. The control module's own
    /// account, with its hint.
    #[error("{0}")]
    ControlSocket(String),
    /// `[supervisor] health` could not be listened on.
    #[error("cannot listen on health address {addr} ([supervisor] health in {}): {cause}", config.display())]
    HealthAddress {
        /// The address as configured.
        addr: String,
        /// The config file.
        config: PathBuf,
        /// What binding said.
        cause: std::io::Error,
    },
    /// A fork-mode worker's template failed to start (its preload did not import).
    #[error("worker {worker:?}: {cause}\nnothing was started")]
    Preload {
        /// The worker.
        worker: String,
        /// What the template reported.
        cause: Cause,
    },
    /// A worker named on the command line that the config does not define.
    #[error("unknown worker {name:?}; {} defines: {}{}", config.display(), list_or_none(known),
        nearest.as_ref().map(|n| format!(" (did you mean {n:?}?)")).unwrap_or_default())]
    UnknownWorker {
        /// The name asked for.
        name: String,
        /// The config file.
        config: PathBuf,
        /// The workers it does define.
        known: Vec<String>,
        /// The defined name nearest to `name`, if one is near.
        nearest: Option<String>,
    },
    /// An `--keys` pattern that is neither a variable name nor a glob.
    #[error(
        "--keys: {0:?} is not a variable name or glob (letters, digits, `_`; globs may use `*`, `?`, `[…]`)"
    )]
    BadKeyPattern(String),
    /// Something agentsup itself needs could not be set up (a thread, the signal
    /// handlers, the subreaper role, the key-file directory).
    #[error("cannot {what}: {cause}{}", if *nothing_started { "\nnothing was started" } else { "" })]
    Startup {
        /// What failed, as a verb phrase ("start the async runtime").
        what: &'static str,
        /// Why.
        cause: Cause,
        /// Whether to add that no worker was started.
        nothing_started: bool,
    },
    /// A worker failed for good (`on_give_up = "exit"`); its story is above.
    #[error("a worker failed for good (see above)")]
    WorkerFailed,
    /// Writing a command's answer to stdout failed (other than a closed pipe).
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    /// `agentsup exec` could not run its command (other than "not found" or "not
    /// executable", which exit 127 and 126 as a shell does): the `SpawnError`.
    #[error("exec: {0}")]
    Exec(Cause),
    /// A command failed in its own way: the control client's `ControlError`,
    /// `init`'s `InitError`.
    #[error("{0}")]
    Failed(Cause),
}

impl Error {
    /// An [`Error::Startup`] (the message does not add that nothing was started).
    pub(crate) fn startup(what: &'static str, cause: impl Into<Cause>) -> Error {
        Error::Startup {
            what,
            cause: cause.into(),
            nothing_started: false,
        }
    }

    /// The process exit code for this failure (SPEC 1).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ConfigUnreadable { .. }
            | Error::Config(_)
            | Error::NoWorkers { .. }
            | Error::ChecksFailed
            | Error::ControlSocket(_)
            | Error::HealthAddress { .. }
            | Error::Preload { .. } => code::CONFIG,
            Error::UnknownWorker { .. } | Error::BadKeyPattern(_) => code::USAGE,
            Error::Startup { .. }
            | Error::WorkerFailed
            | Error::Stdout(_)
            | Error::Exec(_)
            | Error::Failed(_) => code::FAILURE,
        }
    }
}

/// Why a file could not be read: "no such file" rather than the OS's longer
/// wording with its errno, so the line fits 80 columns; the OS's text otherwise.
fn io_reason(cause: &std::io::Error) -> String {
    if cause.kind() == std::io::ErrorKind::NotFound {
        "no such file".to_string()
    } else {
        cause.to_string()
    }
}

/// The hint after "cannot read config …", by how the path was found. In a
/// directory with no config at all, the way to start one is `agentsup init`.
fn origin_hint(origin: Option<ConfigOrigin>, cause: &std::io::Error) -> String {
    match origin {
        None => String::new(),
        Some(ConfigOrigin::Default) if cause.kind() == std::io::ErrorKind::NotFound => format!(
            "\n  hint: no supervisor.toml here ({}):\n        \
             `agentsup init` drafts one, or pass -c FILE or set AGENTSUP_CONFIG",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
        Some(ConfigOrigin::Default) => {
            "\n  hint: make ./supervisor.toml readable, or pass -c FILE".to_string()
        }
        Some(ConfigOrigin::EnvVar) => {
            " (from $AGENTSUP_CONFIG)\n  hint: fix AGENTSUP_CONFIG, or pass -c FILE".to_string()
        }
        Some(ConfigOrigin::Flag) => "\n  hint: check the path given to -c".to_string(),
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(no workers)".to_string()
    } else {
        names.join(", ")
    }
}

fn render_list(items: &[Located]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&item.to_string());
    }
    out
}

/// Result alias used by commands.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    #[test]
    fn codes_follow_the_kind_of_failure() {
        let unreadable = Error::ConfigUnreadable {
            path: "x.toml".into(),
            origin: None,
            cause: io(std::io::ErrorKind::NotFound),
        };
        assert_eq!(unreadable.exit_code(), code::CONFIG);
        assert_eq!(Error::ChecksFailed.exit_code(), code::CONFIG);
        assert_eq!(Error::BadKeyPattern("a.b".into()).exit_code(), code::USAGE);
        assert_eq!(Error::WorkerFailed.exit_code(), code::FAILURE);
        assert_eq!(
            Error::startup(
                "start the spawner thread",
                io(std::io::ErrorKind::OutOfMemory)
            )
            .exit_code(),
            code::FAILURE
        );
    }

    #[test]
    fn messages_are_made_from_the_fields() {
        let e = Error::ConfigUnreadable {
            path: "/etc/a.toml".into(),
            origin: Some(ConfigOrigin::EnvVar),
            cause: io(std::io::ErrorKind::PermissionDenied),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("cannot read config /etc/a.toml: "),
            "{text}"
        );
        assert!(text.contains("(from $AGENTSUP_CONFIG)\n  hint: fix AGENTSUP_CONFIG"));
        let e = Error::UnknownWorker {
            name: "plannr".into(),
            config: "supervisor.toml".into(),
            known: vec!["planner".into(), "critic".into()],
            nearest: Some("planner".into()),
        };
        assert_eq!(
            e.to_string(),
            "unknown worker \"plannr\"; supervisor.toml defines: planner, critic (did you mean \"planner\"?)"
        );
        let e = Error::UnknownWorker {
            name: "a".into(),
            config: "s.toml".into(),
            known: vec![],
            nearest: None,
        };
        assert!(e.to_string().ends_with("defines: (no workers)"));
        let e = Error::Startup {
            what: "set up the key files",
            cause: "the key directory could not be made".into(),
            nothing_started: true,
        };
        assert_eq!(
            e.to_string(),
            "cannot set up the key files: the key directory could not be made\nnothing was started"
        );
    }
}
