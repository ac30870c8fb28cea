//! The public types of fork mode: errors, the forked replica and its exit future,
//! and the template's limits.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::process::SpawnError;
use crate::reaper::ExitStatus;

/// Why a template could not be started or a replica could not be forked. Messages
/// never hold an environment value; the caller adds the worker's name.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The worker is not a fork-mode worker.
    #[error("the worker does not use start = \"fork\"")]
    NotForkMode,
    /// The interpreter could not be found or started.
    #[error("cannot start the fork template: {0}")]
    Spawn(#[from] SpawnError),
    /// `script` does not exist.
    #[error("script {} not found", path.display())]
    ScriptMissing {
        /// The absolute script path.
        path: PathBuf,
    },
    /// `preload` names the module the replicas run.
    #[error(
        "`preload` contains the worker's own module {module:?}; preload libraries, never the module that builds clients from keys"
    )]
    PreloadsOwnModule {
        /// The module.
        module: String,
    },
    /// A path agentsup must pass to Python is not UTF-8.
    #[error("the {what} {} is not valid UTF-8", path.display())]
    NonUtf8 {
        /// What the path is.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A preload module raised while being imported.
    #[error(
        "the fork template could not import preload module {module:?} (the template has no secret keys: a module that needs one at import time cannot be preloaded)\n{traceback}"
    )]
    Preload {
        /// The module named in `preload`.
        module: String,
        /// Python's traceback, redacted.
        traceback: String,
    },
    /// The template exited before it was ready.
    #[error("the fork template exited before it was ready ({status}){}", if output.is_empty() { String::new() } else { format!("; its last output:\n{output}") })]
    TemplateExited {
        /// How it ended.
        status: String,
        /// Its last lines of output, redacted.
        output: String,
    },
    /// Preloading took longer than allowed.
    #[error("the fork template was not ready within {}; it was killed", humantime::format_duration(*after))]
    StartTimeout {
        /// The limit.
        after: Duration,
    },
    /// The template died while this request was in flight; it is being restarted.
    #[error("the fork template died; it is being restarted")]
    TemplateDied,
    /// The template answered, but could not set the child up (bad `cwd`, …).
    #[error("the fork template could not start the replica: {0}")]
    ForkFailed(String),
    /// The template did not answer a fork request in time.
    #[error("the fork template did not answer within {}; it was killed and will be restarted", humantime::format_duration(*after))]
    ReplyTimeout {
        /// The limit.
        after: Duration,
    },
    /// The template broke the protocol.
    #[error("fork template protocol error: {0}")]
    Protocol(String),
    /// An OS error, with what we were doing.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing, as a lowercase fragment.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// [`ForkTemplate::shutdown`](super::ForkTemplate::shutdown) was called.
    #[error("the fork template was shut down")]
    Closed,
}

/// Why a [`ForkExit`] resolved without a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkExitError {
    /// The template died before reporting this replica's exit; the replica was
    /// killed. Treat as a crash.
    #[error("the fork template died before reporting the exit of pid {0}; it was killed")]
    TemplateDied(u32),
}

/// Resolves with a forked replica's exit status, as reported by its template.
/// The counterpart of `crate::reaper::ExitWaiter`; dropping it is fine.
#[derive(Debug)]
pub struct ForkExit {
    pub(super) pid: u32,
    pub(super) rx: oneshot::Receiver<ExitStatus>,
}

impl Future for ForkExit {
    type Output = Result<ExitStatus, ForkExitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Pin::new(&mut this.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| ForkExitError::TemplateDied(this.pid)))
    }
}

/// A forked replica; mirrors `crate::process::Spawned` field for field.
#[derive(Debug)]
pub struct Forked {
    /// Its pid, which is also its process group (and session) id.
    pub pid: u32,
    /// Its stdout; always `Some` (an `Option` to match `Spawned`).
    pub stdout: Option<pipe::Receiver>,
    /// Its stderr; always `Some`.
    pub stderr: Option<pipe::Receiver>,
    /// Resolves when the template has reaped it.
    pub exit: ForkExit,
}

/// Limits and backoff of a template; [`Default`] suits production.
#[derive(Debug, Clone)]
pub struct TemplateOptions {
    /// How long preloading may take (heavy SDKs take seconds on a busy machine).
    pub start_timeout: Duration,
    /// How long one fork request may take before the template counts as wedged.
    pub reply_timeout: Duration,
    /// First delay before restarting a template that died young.
    pub backoff_initial: Duration,
    /// Cap of that delay (doubling).
    pub backoff_max: Duration,
    /// A template that lived this long resets the backoff.
    pub reset_after: Duration,
}

impl Default for TemplateOptions {
    fn default() -> Self {
        TemplateOptions {
            start_timeout: Duration::from_secs(120),
            reply_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            reset_after: Duration::from_secs(30),
        }
    }
}
