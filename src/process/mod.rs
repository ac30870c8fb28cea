//! Starting processes: workers, fork templates, secret-source commands and
//! `exec`'s child (SPEC 3, 5).
//!
//! The real path of every start: `start.rs` resolves the program on the worker's
//! own `PATH` (`path.rs`), builds what the child will read (argv, environment, cwd
//! as C strings, wiped afterwards: they hold the secrets) and the pipes or socket
//! pairs for its output, then calls the one child routine,
//! [`crate::sys::child::spawn`]: `clone(CLONE_VM | CLONE_VFORK)` and raw system
//! calls only up to `execve` (own process group, stdin `/dev/null`, descriptors
//! 0, 1 and 2 only, `PR_SET_PDEATHSIG`, signal dispositions reset, the worker's
//! `user`/`group`; see that module). Where a reaper runs, the clone happens under
//! its registration lock, so no exit is seen before its pid is known. Nothing here
//! waits on a child; exit statuses come from [`crate::reaper`] (or, where no
//! reaper exists, from one `waitpid(pid)`).
//!
//! The parts:
//!
//! * `spawner.rs`: the long-lived thread that starts workers and fork templates.
//!   **PDEATHSIG is per thread**: the kernel sends the death signal when the
//!   *thread* that forked exits, not the process, and tokio's blocking threads
//!   exit after 10 s idle, which would SIGKILL healthy workers.
//! * `capture.rs`: `run_capture`, a short command run to completion with its
//!   output read (a `command` source); the calling thread stays until the command
//!   is collected, so PDEATHSIG is sound there.
//! * `path.rs`: SPEC 3's lookup on the worker's `PATH`, not agentsup's; the child
//!   gets an absolute path.
//! * `kill.rs`: signalling a process or a group, with pid 0 refused and "already
//!   gone" not an error; `terminal.rs`: handing `exec`'s terminal back and forth.
//!
//! PDEATHSIG covers the direct child only: grandchildren of a SIGKILLed agentsup
//! survive it unless agentsup is PID 1 of its namespace (see `crate::guard`).

mod capture;
mod error;
mod kill;
mod path;
mod spawner;
mod start;
mod terminal;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroize;

use crate::sys::creds::Creds;

#[cfg(test)]
pub(crate) use capture::run_capture;
pub(crate) use capture::run_capture_as;
pub use error::SpawnError;
pub use kill::kill_group;
pub(crate) use kill::kill_pid;
pub(crate) use path::path_of;
pub(crate) use path::resolve_program;
pub(crate) use spawner::Spawned;
pub use spawner::Spawner;
pub(crate) use start::spawn_direct;
pub(crate) use terminal::{owns_terminal_foreground, reclaim_terminal};

/// Signals agentsup may send a worker, which a worker must therefore not inherit as
/// ignored: an ignored disposition survives `exec` (crates.md §5), so a supervisor
/// started from a non-interactive shell's background job would otherwise start
/// workers that cannot be stopped with SIGINT.
pub(crate) const DEFAULT_RESET_SIGNALS: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What to start, fully resolved by the caller ([`crate::env`] builds `env`).
#[derive(Clone)]
pub(crate) struct SpawnSpec {
    /// Program and arguments; `argv[0]` is resolved with [`resolve_program`] and
    /// passed to the program unchanged, as a shell would.
    pub argv: Vec<String>,
    /// The complete environment; nothing of agentsup's own is added. For a name
    /// given twice, the last one wins.
    pub env: Vec<(String, String)>,
    /// Working directory; relative program paths resolve against it.
    pub cwd: PathBuf,
    /// Stdin from `/dev/null` (workers) instead of inherited.
    pub stdin_null: bool,
    /// Pipes for stdout and stderr (workers) instead of inheriting agentsup's.
    pub capture: bool,
    /// Start a new process group whose id is the child's pid, so the whole group
    /// can be signalled (SPEC 5: stop signals go to the group).
    pub own_group: bool,
    /// Signal numbers set to `SIG_DFL` in the child; see [`DEFAULT_RESET_SIGNALS`].
    pub reset_signals: Vec<i32>,
    /// The user and group to run as (a worker's `user` / `group`); None keeps
    /// agentsup's own.
    pub creds: Option<Creds>,
}

impl Drop for SpawnSpec {
    /// The values are the worker's secrets: wiped, not just freed.
    fn drop(&mut self) {
        for (_, v) in &mut self.env {
            v.zeroize();
        }
    }
}

impl fmt::Debug for SpawnSpec {
    /// Environment values are never shown, only names: they hold the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnSpec")
            .field("argv", &self.argv)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("cwd", &self.cwd)
            .field("stdin_null", &self.stdin_null)
            .field("capture", &self.capture)
            .field("own_group", &self.own_group)
            .field("reset_signals", &self.reset_signals)
            .field("creds", &self.creds)
            .finish()
    }
}

/// Child-side options that are not the caller's business for workers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildSetup<'a> {
    /// Arm `PR_SET_PDEATHSIG(SIGKILL)`. Only sound when the forking thread lives at
    /// least as long as the child (see the module docs).
    pub(crate) pdeathsig: bool,
    /// Make the child's group the terminal's foreground group (`exec` on a TTY).
    pub(crate) take_terminal: bool,
    /// With `capture`, stdout and stderr are ends of socketpairs instead of pipes: a
    /// process of the same uid can open another process's pipe through
    /// `/proc/<pid>/fd/1` and read what it writes (a credential helper's secrets)
    /// before we do, but the kernel refuses to open a socket that way (ENXIO).
    pub(crate) stdout_socket: bool,
    /// Signals the child starts with ignored (`exec` keeps the ones it inherited
    /// ignored, as `nohup` and tini do); applied after `reset_signals`.
    pub(crate) ignore: &'a [i32],
}
