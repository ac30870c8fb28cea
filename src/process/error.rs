//! What can go wrong starting or collecting a process.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a process could not be started or collected. Messages name the program but
/// never an environment value; the caller adds the worker name.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command has no program.
    #[error("the command is empty")]
    EmptyCommand,
    /// A bare program name was not on the worker's `PATH`.
    #[error("command {program:?} not found on the worker's PATH ({path})")]
    NotFound {
        /// The program as written.
        program: String,
        /// The worker's `PATH`.
        path: String,
    },
    /// A bare program name, and the worker's environment has no `PATH` at all.
    #[error("command {program:?} not found: the worker's environment has no PATH")]
    NoPath {
        /// The program as written.
        program: String,
    },
    /// A program given as a path does not exist.
    #[error("command {program:?} not found ({})", path.display())]
    Missing {
        /// The program as written.
        program: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A program given as a path is not an executable file.
    #[error("command {program:?} ({}) is not an executable file", path.display())]
    NotExecutable {
        /// The program as written.
        program: String,
        /// The file found.
        path: PathBuf,
    },
    /// The working directory is missing or not a directory.
    #[error("working directory {} is not usable: {source}", path.display())]
    Cwd {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// `fork`/`exec` failed (the error comes through std's close-on-exec pipe).
    #[error("cannot start {program:?} ({}): {source}", path.display())]
    Start {
        /// The program as written.
        program: String,
        /// The resolved path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `run_capture` ran out of time; the command's group was killed.
    #[error("{program:?} did not finish within {}; it was killed", humantime::format_duration(*after))]
    Timeout {
        /// The program as written.
        program: String,
        /// The timeout.
        after: Duration,
    },
    /// `run_capture` got more than `CAPTURE_LIMIT` bytes; the group was killed.
    #[error("{program:?} wrote more than {limit} bytes of output; it was killed")]
    OutputTooLarge {
        /// The program as written.
        program: String,
        /// The limit.
        limit: usize,
    },
    /// The exit status could not be collected.
    #[error("lost the exit status of {program:?}: {source}")]
    Wait {
        /// The program as written.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Any other OS error, with what we were doing.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing, as a lowercase fragment.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The spawner thread is gone (it only stops if it panicked).
    #[error("the spawner thread has stopped")]
    SpawnerGone,
}
