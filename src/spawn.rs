//! Starting processes: workers, secret-source commands and `exec`'s child (SPEC 3, 5).
//!
//! Everything is started through one child routine, [`crate::sys::child`]
//! (`clone(CLONE_VM | CLONE_VFORK)`, raw system calls only): an explicit
//! environment (the worker's own variables, nothing of agentsup's), its own process
//! group, stdin from `/dev/null`, descriptors 0, 1 and 2 only, `PR_SET_PDEATHSIG`,
//! signal dispositions reset, and the worker's `user`/`group`. This module resolves
//! the program, builds what the child reads (wiped afterwards: it holds the
//! secrets), and owns the spawner thread and output capture. Nothing here waits on
//! a child; exit statuses come from [`crate::reaper`] (or, where no reaper exists,
//! from one `waitpid(pid)`).
//!
//! Three traps shape this module:
//!
//! * **PDEATHSIG is per thread.** The kernel sends the death signal when the
//!   *thread* that forked exits, not the process. tokio's blocking threads exit after
//!   10 s idle, which would SIGKILL perfectly healthy workers. Workers are therefore
//!   forked by one long-lived thread, the [`Spawner`], which never exits before the
//!   process does.
//! * **PATH lookup.** SPEC 3 says the worker's own `PATH`, not agentsup's, so
//!   [`resolve_program`] does the lookup and the child gets an absolute path.
//! * **After `clone`, before `exec`.** The child shares agentsup's memory and may
//!   only make raw system calls: no allocation, no locks, no `tracing`. It reads
//!   only what was built before the clone.
//!
//! PDEATHSIG covers the direct child only: grandchildren of a SIGKILLed agentsup
//! survive it unless agentsup is PID 1 of its namespace.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use std::mem::take;

use zeroize::{Zeroize, Zeroizing};

use crate::auth::Termination;
use crate::reaper::{self, ExitWaiter, Reaper, ReaperHandle};
use crate::sys::child::{self, CArray};
use crate::sys::creds::Creds;

/// Signals agentsup may send a worker, which a worker must therefore not inherit as
/// ignored: an ignored disposition survives `exec` (crates.md §5), so a supervisor
/// started from a non-interactive shell's background job would otherwise start
/// workers that cannot be stopped with SIGINT.
pub const DEFAULT_RESET_SIGNALS: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The most output [`run_capture`] keeps; a secret command printing more is broken.
pub const CAPTURE_LIMIT: usize = 16 << 20;

/// How long [`run_capture`] waits for a SIGKILLed command to be collected.
const KILL_GRACE: Duration = Duration::from_secs(5);

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
    /// [`run_capture`] ran out of time; the command's group was killed.
    #[error("{program:?} did not finish within {}; it was killed", humantime::format_duration(*after))]
    Timeout {
        /// The program as written.
        program: String,
        /// The timeout.
        after: Duration,
    },
    /// [`run_capture`] got more than [`CAPTURE_LIMIT`] bytes; the group was killed.
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

/// What to start, fully resolved by the caller ([`crate::env`] builds `env`).
#[derive(Clone)]
pub struct SpawnSpec {
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
pub(crate) struct ChildSetup {
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
}

/// Finds the file to execute for `program`, the way a shell would but on the
/// worker's `PATH` (`path_var`) rather than agentsup's.
///
/// A program containing `/` is used as-is, relative to `cwd`. Otherwise each `PATH`
/// entry is tried in order (an empty entry means `cwd`, as in POSIX shells, and a
/// relative one is relative to `cwd`) for a regular file with an execute bit.
pub fn resolve_program(
    program: &str,
    path_var: Option<&str>,
    cwd: &Path,
) -> Result<PathBuf, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError::EmptyCommand);
    }
    if program.contains('/') {
        let path = cwd.join(program);
        return match fs::metadata(&path) {
            Err(_) => Err(SpawnError::Missing {
                program: program.into(),
                path,
            }),
            Ok(meta) if !is_executable(&meta) => Err(SpawnError::NotExecutable {
                program: program.into(),
                path,
            }),
            Ok(_) => Ok(path),
        };
    }
    let Some(path_var) = path_var else {
        return Err(SpawnError::NoPath {
            program: program.into(),
        });
    };
    for dir in path_var.split(':') {
        let candidate = cwd.join(dir).join(program);
        if fs::metadata(&candidate).is_ok_and(|m| is_executable(&m)) {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotFound {
        program: program.into(),
        path: path_var.into(),
    })
}

fn is_executable(meta: &fs::Metadata) -> bool {
    // Any execute bit, as `which` does; an exec that still fails for permissions
    // is reported by `Command::spawn` with the OS error.
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// The value of `PATH` in an environment list (the last one wins, as in `Command`).
pub(crate) fn path_of(env: &[(String, String)]) -> Option<&str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
}

/// Checks `cwd` and resolves the program on the worker's PATH.
fn check_and_resolve(spec: &SpawnSpec) -> Result<PathBuf, SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::EmptyCommand)?;
    match fs::metadata(&spec.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.clone(),
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        Err(source) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.clone(),
                source,
            });
        }
    }
    resolve_program(program, path_of(&spec.env), &spec.cwd)
}

/// A started process: its pid and, when captured, its output pipes.
#[derive(Debug)]
pub(crate) struct Started {
    /// Its pid; with [`SpawnSpec::own_group`] also its process group id.
    pub(crate) pid: u32,
    /// Its stdout, when [`SpawnSpec::capture`] was set (blocking).
    pub(crate) stdout: Option<OwnedFd>,
    /// Its stderr, when [`SpawnSpec::capture`] was set (blocking).
    pub(crate) stderr: Option<OwnedFd>,
}

/// Starts `spec` through the one child routine ([`crate::sys::child`]): `launch`
/// calls [`child::spawn`], under the reaper's lock where one runs (see
/// [`registered`]), and returns the pid with whatever it registered.
fn start<T>(
    spec: &SpawnSpec,
    setup: ChildSetup,
    launch: impl FnOnce(&child::Spec<'_>) -> io::Result<(u32, T)>,
) -> Result<(Started, T), SpawnError> {
    use std::os::fd::AsRawFd;
    let path = check_and_resolve(spec)?;
    let io_err = |source: io::Error| start_error(spec, path.clone(), source);
    let program = cstring(&path).map_err(io_err)?;
    let argv = CArray::new(spec.argv.iter().map(|a| a.as_bytes().to_vec())).map_err(io_err)?;
    let envp =
        CArray::env(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(io_err)?;
    let cwd = cstring(&spec.cwd).map_err(io_err)?;
    let devnull = if spec.stdin_null {
        Some(File::open("/dev/null").map_err(io_err)?)
    } else {
        None
    };
    let (out, err) = if spec.capture {
        let out = if setup.stdout_socket {
            socketpair_cloexec()
        } else {
            pipe_cloexec()
        };
        // stderr too: a helper's errors can echo what it fetched.
        let err = if setup.stdout_socket {
            socketpair_cloexec()
        } else {
            pipe_cloexec()
        };
        (Some(out.map_err(io_err)?), Some(err.map_err(io_err)?))
    } else {
        (None, None)
    };
    let child_spec = child::Spec {
        program: &program,
        argv: &argv,
        envp: &envp,
        cwd: &cwd,
        stdio: [
            devnull.as_ref().map_or(-1, |f| f.as_raw_fd()),
            out.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            err.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
        ],
        own_group: spec.own_group,
        take_terminal: setup.take_terminal,
        pdeathsig: setup.pdeathsig,
        reset: &spec.reset_signals,
        creds: spec.creds.as_ref(),
    };
    let (pid, extra) = launch(&child_spec).map_err(io_err)?;
    // Our copies of the child's ends (stdin, the pipes' write ends) close here.
    drop(devnull);
    Ok((
        Started {
            pid,
            stdout: out.map(|(r, _w)| r),
            stderr: err.map(|(r, _w)| r),
        },
        extra,
    ))
}

/// A `launch` for [`start`] that registers the child with `reaper` atomically
/// with the spawn (see [`crate::reaper`] on the registration race).
fn registered(
    reaper: &ReaperHandle,
) -> impl FnOnce(&child::Spec<'_>) -> io::Result<(u32, ExitWaiter)> + '_ {
    move |c| {
        let mut registrar = reaper.lock();
        let pid = child::spawn(c)?;
        Ok((pid, registrar.register(pid)))
    }
}

/// A `launch` for [`start`] with no reaper.
fn unregistered(c: &child::Spec<'_>) -> io::Result<(u32, ())> {
    child::spawn(c).map(|pid| (pid, ()))
}

fn start_error(spec: &SpawnSpec, path: PathBuf, source: io::Error) -> SpawnError {
    SpawnError::Start {
        program: spec.argv[0].clone(),
        path,
        source,
    }
}

/// Spawns without a reaper; the caller waits on this one pid itself. Only for
/// processes with no reaper running (`agentsup check`, `agentsup exec`).
pub(crate) fn spawn_direct(spec: &SpawnSpec, setup: ChildSetup) -> Result<Started, SpawnError> {
    start(spec, setup, unregistered).map(|(started, ())| started)
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid; with [`SpawnSpec::own_group`] also its process group id.
    pub pid: u32,
    /// Its stdout, when [`SpawnSpec::capture`] was set. Non-blocking, registered
    /// with the runtime that awaited [`Spawner::spawn`].
    pub stdout: Option<pipe::Receiver>,
    /// Its stderr, when [`SpawnSpec::capture`] was set.
    pub stderr: Option<pipe::Receiver>,
    /// Resolves when the reaper has collected it.
    pub exit: ExitWaiter,
}

/// What the spawner thread hands back; pipes become async on the caller's runtime.
struct RawSpawned {
    pid: u32,
    group: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    exit: ExitWaiter,
}

impl RawSpawned {
    fn into_spawned(self) -> Result<Spawned, SpawnError> {
        let to_async = |fd: Option<OwnedFd>| fd.map(pipe::Receiver::from_owned_fd).transpose();
        match (to_async(self.stdout), to_async(self.stderr)) {
            (Ok(stdout), Ok(stderr)) => Ok(Spawned {
                pid: self.pid,
                stdout,
                stderr,
                exit: self.exit,
            }),
            (Err(source), _) | (_, Err(source)) => {
                abandon(self.pid, self.group);
                Err(SpawnError::Io {
                    what: "registering a worker's output pipe",
                    source,
                })
            }
        }
    }
}

/// Kills a process that was just started but that nobody can supervise.
fn abandon(pid: u32, group: bool) {
    let _ = if group {
        kill_group(pid, libc::SIGKILL)
    } else {
        kill_pid(pid, libc::SIGKILL)
    };
}

struct Request {
    spec: SpawnSpec,
    reaper: ReaperHandle,
    reply: oneshot::Sender<Result<RawSpawned, SpawnError>>,
}

/// The process-wide spawner thread's queue. Kept here forever, so the thread never
/// sees its channel close and never exits (which would SIGKILL every worker).
static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);

/// A handle to the spawner thread, which forks every worker (see the module docs on
/// why one long-lived thread). Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
    reaper: ReaperHandle,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl Spawner {
    /// Starts the spawner thread, or reuses the one already running; children are
    /// registered with `reaper`. The thread lives until the process exits.
    pub fn start(reaper: ReaperHandle) -> io::Result<Spawner> {
        let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        let requests = match &*slot {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<Request>();
                thread::Builder::new()
                    .name("agentsup-spawner".into())
                    .spawn(move || spawner_thread(&rx))?;
                *slot = Some(tx.clone());
                tx
            }
        };
        Ok(Spawner { requests, reaper })
    }

    /// Starts `spec` on the spawner thread and returns it registered with the
    /// reaper. If this future is dropped before the reply arrives, the new process
    /// is killed instead of being left unsupervised.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request {
                spec,
                reaper: self.reaper.clone(),
                reply,
            })
            .map_err(|_| SpawnError::SpawnerGone)?;
        let raw = rx.await.map_err(|_| SpawnError::SpawnerGone)??;
        raw.into_spawned()
    }
}

fn spawner_thread(requests: &mpsc::Receiver<Request>) {
    let setup = ChildSetup {
        pdeathsig: true,
        take_terminal: false,
        stdout_socket: false,
    };
    for req in requests {
        let result =
            start(&req.spec, setup, registered(&req.reaper)).map(|(started, exit)| RawSpawned {
                pid: started.pid,
                group: req.spec.own_group,
                stdout: started.stdout,
                stderr: started.stderr,
                exit,
            });
        // The caller stopped waiting (its future was dropped).
        if let Err(Ok(orphaned)) = req.reply.send(result) {
            abandon(orphaned.pid, orphaned.group);
        }
    }
}

/// Sends `sig` to every process in group `pgid`. A group that no longer exists is
/// not an error (it may have just exited). `pgid` 0 is refused: `killpg(0)` would
/// signal agentsup's own group.
pub fn kill_group(pgid: u32, sig: i32) -> io::Result<()> {
    let raw = reaper::to_pid(pgid)?;
    // SAFETY: killpg has no memory-safety preconditions; `raw` > 0 names one group.
    let r = unsafe { libc::killpg(raw, sig) };
    ok_unless_gone(r)
}

/// Sends `sig` to one process. A process that no longer exists is not an error.
/// `pid` 0 is refused (it means "my group"), as are values that would be negative.
pub fn kill_pid(pid: u32, sig: i32) -> io::Result<()> {
    let raw = reaper::to_pid(pid)?;
    // SAFETY: kill has no memory-safety preconditions; `raw` > 0 names one process.
    let r = unsafe { libc::kill(raw, sig) };
    ok_unless_gone(r)
}

fn ok_unless_gone(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Sets `sig` to `SIG_IGN` in this process (`exec` ignores SIGTTIN/SIGTTOU like
/// tini, so it is not stopped when it touches the terminal from the background).
pub(crate) fn ignore_signal(sig: i32) -> io::Result<()> {
    // SAFETY: installing SIG_IGN involves no handler code, so it cannot break
    // async-signal-safety; the call itself has no memory preconditions.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when stdin is a terminal whose foreground group is ours, i.e. a child may
/// be given the terminal without stealing it from a shell that put us in the
/// background.
pub(crate) fn owns_terminal_foreground() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only read kernel state for a file
    // descriptor number / this process; no memory is passed.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

/// Makes our own process group the terminal's foreground group again, after a
/// child that had it exited. Needs SIGTTOU ignored (we are in the background).
pub(crate) fn reclaim_terminal() {
    // SAFETY: as in `owns_terminal_foreground`; no memory is passed.
    unsafe {
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
    }
}

/// The result of [`run_capture`]. Its `Debug` shows sizes only: the output of a
/// secret command *is* the secrets.
pub struct Captured {
    /// How the command ended.
    pub status: Termination,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Drop for Captured {
    /// A `command` source's output *is* the secrets: wiped, not just freed.
    fn drop(&mut self) {
        self.stdout.zeroize();
        self.stderr.zeroize();
    }
}

impl fmt::Debug for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Captured")
            .field("status", &self.status)
            .field("stdout", &format_args!("<{} bytes>", self.stdout.len()))
            .field("stderr", &format_args!("<{} bytes>", self.stderr.len()))
            .finish()
    }
}

/// Where [`run_capture`] gets the exit status from.
enum ExitSource {
    Reaper(ExitWaiter),
    Direct(u32),
}

impl ExitSource {
    /// Checks once, without waiting, whether the command has exited.
    fn poll_once(&mut self) -> io::Result<Option<Termination>> {
        match self {
            ExitSource::Reaper(w) => match w.try_wait() {
                None => Ok(None),
                Some(Ok(status)) => Ok(Some(status.termination)),
                Some(Err(e)) => Err(io::Error::other(e)),
            },
            ExitSource::Direct(pid) => reaper::reap_pid(*pid, false),
        }
    }

    /// Waits for the exit until `deadline`; `Ok(None)` when it did not come.
    ///
    /// This polls with short sleeps. It is only entered once both output pipes are
    /// closed, which nearly always means the process has exited already, so the
    /// first or second check succeeds; the loop only bounds the odd command that
    /// closes its output and keeps running.
    fn wait_until(&mut self, deadline: Instant) -> io::Result<Option<Termination>> {
        let mut pause = Duration::from_millis(1);
        loop {
            let done = match self {
                ExitSource::Reaper(w) => match w.try_wait() {
                    None => None,
                    Some(Ok(status)) => Some(status.termination),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                },
                ExitSource::Direct(pid) => reaper::reap_pid(*pid, false)?,
            };
            if done.is_some() {
                return Ok(done);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// Why reading a command's output stopped early.
enum ReadStop {
    Deadline,
    TooLarge,
    Io(io::Error),
}

/// Runs a short command to completion and returns its output: the secret source
/// `type = "command"` (SPEC 2). Blocking; call it from `spawn_blocking` or a plain
/// thread, never from async code.
///
/// The command gets exactly `env`, stdin from `/dev/null`, its own process group and
/// `cwd`. On timeout (or more than [`CAPTURE_LIMIT`] bytes of output) the whole group
/// is SIGKILLed and an error returned; the output is dropped then, since the
/// error's text must not carry secrets.
///
/// Waiting: with a reaper (passed in, or already running in this process — another
/// `waitpid` would race it) the command is registered under its lock. Without one,
/// as in `agentsup check`, this waits on the command's own pid.
///
/// PDEATHSIG is armed even though the caller is usually a short-lived tokio
/// blocking thread: the forking thread is the caller, and the caller stays inside
/// this function until the command has been collected or killed, so that thread
/// cannot exit while the command lives. A command that leaves a background process
/// holding its stdout open counts as not finished, and is killed at the timeout.
pub fn run_capture(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    timeout: Duration,
    reaper: Option<&ReaperHandle>,
) -> Result<Captured, SpawnError> {
    let deadline = Instant::now() + timeout;
    let spec = SpawnSpec {
        argv: argv.to_vec(),
        env: env.to_vec(),
        cwd: cwd.to_path_buf(),
        stdin_null: true,
        capture: true,
        own_group: true,
        reset_signals: DEFAULT_RESET_SIGNALS.to_vec(),
        creds: None,
    };
    let setup = ChildSetup {
        pdeathsig: true,
        take_terminal: false,
        stdout_socket: true,
    };
    let reaper = reaper.cloned().or_else(Reaper::current);
    let (child, mut exit) = match &reaper {
        Some(r) => {
            let (child, waiter) = start(&spec, setup, registered(r))?;
            (child, ExitSource::Reaper(waiter))
        }
        None => {
            let child = spawn_direct(&spec, setup)?;
            let pid = child.pid;
            (child, ExitSource::Direct(pid))
        }
    };
    let pid = child.pid;
    let program = spec.argv[0].clone();
    let stdout = child.stdout.map(File::from);
    let stderr = child.stderr.map(File::from);

    let stop = match read_until_eof(stdout, stderr, deadline, &mut exit) {
        Ok((stdout, stderr, Some(status), leaked)) => {
            // When the command exited but something it started (an agent, a cache
            // daemon) keeps its output open, use what it printed and end the rest of
            // its group (which still has members, so its id cannot have been reused)
            // instead of waiting for the timeout.
            if leaked {
                let _ = kill_group(pid, libc::SIGKILL);
            }
            return Ok(Captured {
                status,
                stdout,
                stderr,
            });
        }
        Ok((stdout, stderr, None, _)) => match exit.wait_until(deadline) {
            Ok(Some(status)) => {
                return Ok(Captured {
                    status,
                    stdout,
                    stderr,
                });
            }
            Ok(None) => ReadStop::Deadline,
            Err(source) => return Err(SpawnError::Wait { program, source }),
        },
        Err(stop) => stop,
    };
    // Out of time or bounds: kill the whole group, then collect the leader so no
    // zombie is left behind (with a bound, for a process stuck in the kernel).
    let _ = kill_group(pid, libc::SIGKILL);
    let _ = exit.wait_until(Instant::now() + KILL_GRACE);
    Err(match stop {
        ReadStop::Deadline => SpawnError::Timeout {
            program,
            after: timeout,
        },
        ReadStop::TooLarge => SpawnError::OutputTooLarge {
            program,
            limit: CAPTURE_LIMIT,
        },
        ReadStop::Io(source) => SpawnError::Io {
            what: "reading a command's output",
            source,
        },
    })
}

/// stdout, stderr, the command's status if it was seen, and whether a leftover
/// process held the output open after the command exited.
type ReadOutcome = (Vec<u8>, Vec<u8>, Option<Termination>, bool);

/// How long a command's output may stay open after the command itself exited.
const CAPTURE_LEAK_GRACE: Duration = Duration::from_millis(500);

/// Reads both pipes until both reach EOF, multiplexed with `poll` so a command that
/// fills one pipe while we read the other cannot deadlock. Also watches for the
/// command's own exit: when it has exited and the pipes stay open for
/// [`CAPTURE_LEAK_GRACE`] (a background process it started holds them), reading
/// stops and the status is returned with what was read.
fn read_until_eof(
    stdout: Option<File>,
    stderr: Option<File>,
    deadline: Instant,
    exit: &mut ExitSource,
) -> Result<ReadOutcome, ReadStop> {
    // Wiped when dropped, on the early returns too: this is the secrets.
    let mut streams = [
        (stdout, Zeroizing::new(Vec::new())),
        (stderr, Zeroizing::new(Vec::new())),
    ];
    let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
    let mut exited: Option<(Termination, Instant)> = None;
    loop {
        let open: Vec<usize> = (0..2).filter(|&i| streams[i].0.is_some()).collect();
        if open.is_empty() {
            let [(_, mut out), (_, mut err)] = streams;
            return Ok((
                take(&mut out),
                take(&mut err),
                exited.map(|(s, _)| s),
                false,
            ));
        }
        if exited.is_none() {
            match exit.poll_once() {
                Ok(Some(status)) => exited = Some((status, Instant::now())),
                Ok(None) => {}
                Err(e) => return Err(ReadStop::Io(e)),
            }
        }
        if let Some((status, at)) = exited {
            if at.elapsed() >= CAPTURE_LEAK_GRACE {
                let [(_, mut out), (_, mut err)] = streams;
                return Ok((take(&mut out), take(&mut err), Some(status), true));
            }
        }
        // Wake at least every 100 ms to notice the command's exit (see above).
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if deadline <= Instant::now() {
            return Err(ReadStop::Deadline);
        }
        // Round up, so we never spin on a sub-millisecond remainder.
        let millis = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|&i| streams[i].0.as_ref())
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ReadStop::Io(e.into())),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        for (&i, _) in open.iter().zip(&ready).filter(|(_, r)| **r) {
            let (file, data) = &mut streams[i];
            let Some(f) = file.as_mut() else { continue };
            match f.read(&mut buf) {
                Ok(0) => *file = None,
                Ok(n) => append_wiping(data, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadStop::Io(e)),
            }
        }
        if streams[0].1.len() + streams[1].1.len() > CAPTURE_LIMIT {
            return Err(ReadStop::TooLarge);
        }
    }
}

/// `data.extend_from_slice(bytes)`, except that a buffer outgrown is wiped before
/// it is freed (a plain `Vec` growth leaves the old copy of the output in freed
/// memory).
fn append_wiping(data: &mut Vec<u8>, bytes: &[u8]) {
    if data.len() + bytes.len() > data.capacity() {
        let mut bigger = Vec::with_capacity((data.len() + bytes.len()).max(2 * data.capacity()));
        bigger.extend_from_slice(data);
        data.zeroize();
        *data = bigger;
    }
    data.extend_from_slice(bytes);
}

fn cstring(s: impl AsRef<std::ffi::OsStr>) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(s.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte in argument"))
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Like [`pipe_cloexec`] (read end first), but a connected socket pair whose read
/// end is shut for writing, so data flows one way only, as through a pipe.
fn socketpair_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.shutdown(std::net::Shutdown::Write)?;
    Ok((OwnedFd::from(ours), OwnedFd::from(theirs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::test_support::{block_on, isolated};
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncReadExt;

    const SYS_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

    fn env() -> Vec<(String, String)> {
        vec![("PATH".into(), SYS_PATH.into())]
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn spec(items: &[&str]) -> SpawnSpec {
        SpawnSpec {
            argv: argv(items),
            env: env(),
            cwd: "/".into(),
            stdin_null: true,
            capture: true,
            own_group: true,
            reset_signals: DEFAULT_RESET_SIGNALS.to_vec(),
            creds: None,
        }
    }

    fn write_script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// The `/proc/<pid>/status` line `key:`, without the key.
    fn proc_status(pid: u32, key: &str) -> Option<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// Dead means gone, or a zombie nobody has reaped yet (PID 1 in a test
    /// container may not reap).
    fn is_dead(pid: u32) -> bool {
        proc_status(pid, "State").is_none_or(|s| s.starts_with('Z'))
    }

    fn wait_dead(pid: u32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if is_dead(pid) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn resolves_on_the_workers_path_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        write_script(&bin, "only-here", "#!/bin/sh\n", 0o755);
        write_script(&bin, "not-exec", "#!/bin/sh\n", 0o644);
        let path = bin.to_str().unwrap();

        assert_eq!(
            resolve_program("only-here", Some(path), dir.path()).unwrap(),
            bin.join("only-here")
        );
        // `sh` is on agentsup's PATH but not on the worker's.
        let err = resolve_program("sh", Some("/nonexistent"), dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "command \"sh\" not found on the worker's PATH (/nonexistent)"
        );
        assert!(matches!(
            resolve_program("not-exec", Some(path), dir.path()),
            Err(SpawnError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program("sh", None, dir.path()),
            Err(SpawnError::NoPath { .. })
        ));
        // A relative PATH entry (and an empty one) is relative to the worker's cwd.
        assert_eq!(
            resolve_program("only-here", Some("bin"), dir.path()).unwrap(),
            bin.join("only-here")
        );
        assert_eq!(
            resolve_program("only-here", Some(""), &bin).unwrap(),
            bin.join("only-here")
        );
    }

    #[test]
    fn programs_with_a_slash_are_relative_to_cwd() {
        let dir = tempfile::tempdir().unwrap();
        write_script(dir.path(), "run.sh", "#!/bin/sh\n", 0o755);
        write_script(dir.path(), "data.txt", "", 0o644);
        assert_eq!(
            resolve_program("./run.sh", None, dir.path()).unwrap(),
            dir.path().join("./run.sh")
        );
        assert!(matches!(
            resolve_program("./data.txt", None, dir.path()),
            Err(SpawnError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve_program("./missing", None, dir.path()),
            Err(SpawnError::Missing { .. })
        ));
        assert!(matches!(
            resolve_program("", None, dir.path()),
            Err(SpawnError::EmptyCommand)
        ));
    }

    #[test]
    fn run_capture_collects_output_and_status() {
        let out = run_capture(
            &argv(&["sh", "-c", "printf out; printf err >&2; exit 3"]),
            &env(),
            Path::new("/"),
            Duration::from_secs(20),
            None,
        )
        .unwrap();
        assert_eq!(out.status, Termination::Exited(3));
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.stderr, b"err");
        assert!(!format!("{out:?}").contains("out\""));
    }

    #[test]
    fn run_capture_gets_exactly_the_given_environment() {
        let out = run_capture(
            &argv(&["env"]),
            &[
                ("PATH".into(), SYS_PATH.into()),
                ("ONLY".into(), "this".into()),
            ],
            Path::new("/"),
            Duration::from_secs(20),
            None,
        )
        .unwrap();
        let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["ONLY=this".to_owned(), format!("PATH={SYS_PATH}")]);
    }

    #[test]
    fn run_capture_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let started = Instant::now();
        let err = run_capture(
            &argv(&["sh", "-c", &script]),
            &env(),
            Path::new("/"),
            Duration::from_millis(500),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, SpawnError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let bg: u32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            wait_dead(bg, Duration::from_secs(5)),
            "background sleep survived"
        );
    }

    #[test]
    fn children_start_with_no_signal_blocked() {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
        let mut term = SigSet::empty();
        term.add(Signal::SIGTERM);
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&term), Some(&mut old)).unwrap();
        let out = run_capture(
            &argv(&["grep", "SigBlk", "/proc/self/status"]),
            &env(),
            Path::new("/"),
            Duration::from_secs(20),
            None,
        );
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
        let out = String::from_utf8(out.unwrap().stdout.clone()).unwrap();
        assert_eq!(out.split_whitespace().nth(1), Some("0000000000000000"));
    }

    #[test]
    fn run_capture_reports_exec_failure() {
        let dir = tempfile::tempdir().unwrap();
        // Executable bit but no valid interpreter: exec itself fails.
        write_script(dir.path(), "broken", "#!/nonexistent/interp\n", 0o755);
        let err = run_capture(
            &argv(&["./broken"]),
            &env(),
            dir.path(),
            Duration::from_secs(20),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, SpawnError::Start { .. }), "{err}");
    }

    #[test]
    fn kill_refuses_pid_zero() {
        assert!(kill_group(0, libc::SIGTERM).is_err());
        assert!(kill_pid(0, libc::SIGTERM).is_err());
        // A group that does not exist is fine.
        assert!(kill_group(i32::MAX as u32, libc::SIGTERM).is_ok());
    }

    #[test]
    fn spawner_children_are_ours_with_pipes_and_a_clean_mask() {
        isolated(
            concat!(
                module_path!(),
                "::spawner_children_are_ours_with_pipes_and_a_clean_mask"
            ),
            || {
                block_on(async {
                    let reaper = Reaper::start().unwrap();
                    let spawner = Spawner::start(reaper).unwrap();
                    let mut child = spawner
                        .spawn(spec(&[
                            "sh",
                            "-c",
                            "echo hello; echo oops >&2; exec sleep 30",
                        ]))
                        .await
                        .unwrap();
                    let mut line = [0u8; 6];
                    child
                        .stdout
                        .as_mut()
                        .unwrap()
                        .read_exact(&mut line)
                        .await
                        .unwrap();
                    assert_eq!(&line, b"hello\n");
                    let mut err = [0u8; 5];
                    child
                        .stderr
                        .as_mut()
                        .unwrap()
                        .read_exact(&mut err)
                        .await
                        .unwrap();
                    assert_eq!(&err, b"oops\n");

                    let ppid = proc_status(child.pid, "PPid").unwrap();
                    assert_eq!(ppid, std::process::id().to_string());
                    assert_eq!(
                        proc_status(child.pid, "SigBlk").unwrap(),
                        "0000000000000000"
                    );
                    // Own group: the pgid (field 5 of /proc/<pid>/stat) is the pid.
                    let stat = fs::read_to_string(format!("/proc/{}/stat", child.pid)).unwrap();
                    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
                    let pgid = after_comm.split(' ').nth(2).unwrap();
                    assert_eq!(pgid, child.pid.to_string());

                    kill_group(child.pid, libc::SIGTERM).unwrap();
                    let status = child.exit.await.unwrap();
                    assert_eq!(status.termination, Termination::Signaled(libc::SIGTERM));
                });
            },
        );
    }

    #[test]
    fn ignored_signals_are_reset_in_the_child() {
        isolated(
            concat!(module_path!(), "::ignored_signals_are_reset_in_the_child"),
            || {
                // As if started from a non-interactive shell's background job,
                // and as the Rust runtime leaves SIGPIPE in agentsup itself.
                ignore_signal(libc::SIGINT).unwrap();
                ignore_signal(libc::SIGPIPE).unwrap();
                block_on(async {
                    let spawner = Spawner::start(Reaper::start().unwrap()).unwrap();
                    let sigint_bit = 1u64 << (libc::SIGINT - 1);
                    let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
                    let sig_ign = |pid| {
                        u64::from_str_radix(&proc_status(pid, "SigIgn").unwrap(), 16).unwrap()
                    };

                    let mut kept = spec(&["sleep", "30"]);
                    kept.reset_signals.clear();
                    let kept = spawner.spawn(kept).await.unwrap();
                    assert_ne!(sig_ign(kept.pid) & sigint_bit, 0, "control: inherited");
                    assert_eq!(sig_ign(kept.pid) & sigpipe_bit, 0, "SIGPIPE, always reset");

                    let reset = spawner.spawn(spec(&["sleep", "30"])).await.unwrap();
                    assert_eq!(sig_ign(reset.pid) & sigint_bit, 0);

                    for child in [kept, reset] {
                        kill_group(child.pid, libc::SIGKILL).unwrap();
                        child.exit.await.unwrap();
                    }
                });
            },
        );
    }

    #[test]
    fn workers_survive_the_exit_of_the_thread_that_asked() {
        isolated(
            concat!(
                module_path!(),
                "::workers_survive_the_exit_of_the_thread_that_asked"
            ),
            || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_keep_alive(Duration::from_millis(50))
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let spawner = Spawner::start(Reaper::start().unwrap()).unwrap();
                    // Ask from a blocking-pool thread, which then idles out and exits.
                    // Had it forked the child itself, PDEATHSIG would kill the child.
                    let handle = tokio::runtime::Handle::current();
                    let (child, tid) = tokio::task::spawn_blocking(move || {
                        let tid = nix::unistd::gettid();
                        (handle.block_on(spawner.spawn(spec(&["sleep", "30"]))), tid)
                    })
                    .await
                    .unwrap();
                    let mut child = child.unwrap();
                    // Waits for the event itself, the asking thread's exit (it
                    // idles out after 50 ms), not for a guessed time.
                    let task = format!("/proc/self/task/{tid}");
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while std::path::Path::new(&task).exists() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    assert!(
                        !std::path::Path::new(&task).exists(),
                        "the blocking thread never exited: the test would prove nothing"
                    );
                    // A PDEATHSIG is sent as that thread exits: a child it killed
                    // is reaped within moments, one that survived is not.
                    assert!(
                        tokio::time::timeout(Duration::from_secs(1), &mut child.exit)
                            .await
                            .is_err(),
                        "worker died with the blocking thread"
                    );
                    assert!(!is_dead(child.pid), "worker died with the blocking thread");
                    kill_group(child.pid, libc::SIGKILL).unwrap();
                    assert_eq!(
                        child.exit.await.unwrap().termination,
                        Termination::Signaled(libc::SIGKILL)
                    );
                });
            },
        );
    }

    /// The child of this test prints a worker's pid and waits to be SIGKILLed; the
    /// worker must die with it (PDEATHSIG).
    #[test]
    fn workers_die_with_a_killed_supervisor() {
        const NAME: &str = "spawn::tests::workers_die_with_a_killed_supervisor";
        if std::env::var("AGENTSUP_ISOLATED_TEST").as_deref() == Ok(NAME) {
            block_on(async {
                let spawner = Spawner::start(Reaper::start().unwrap()).unwrap();
                let child = spawner.spawn(spec(&["sleep", "60"])).await.unwrap();
                println!("WORKER {}", child.pid);
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            return;
        }
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut supervisor = Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env("AGENTSUP_ISOLATED_TEST", NAME)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = io::BufReader::new(supervisor.stdout.take().unwrap());
        let worker: u32 = stdout
            .lines()
            .map_while(Result::ok)
            // libtest prints the test name on the same line, before our output.
            .find_map(|l| {
                l.split_once("WORKER ")
                    .map(|(_, p)| p.trim().parse().unwrap())
            })
            .expect("worker pid");
        assert!(!is_dead(worker));
        supervisor.kill().unwrap();
        supervisor.wait().unwrap();
        assert!(
            wait_dead(worker, Duration::from_secs(5)),
            "worker survived SIGKILL of its supervisor"
        );
    }

    #[test]
    fn run_capture_goes_through_a_running_reaper() {
        isolated(
            concat!(
                module_path!(),
                "::run_capture_goes_through_a_running_reaper"
            ),
            || {
                let reaper = Reaper::start().unwrap();
                // Passing None must still use the reaper: a direct waitpid would race it.
                for _ in 0..20 {
                    let out = run_capture(
                        &argv(&["sh", "-c", "echo hi; exit 4"]),
                        &env(),
                        Path::new("/"),
                        Duration::from_secs(20),
                        None,
                    )
                    .unwrap();
                    assert_eq!(out.status, Termination::Exited(4));
                    assert_eq!(out.stdout, b"hi\n");
                }
                let out = run_capture(
                    &argv(&["true"]),
                    &env(),
                    Path::new("/"),
                    Duration::from_secs(20),
                    Some(&reaper),
                )
                .unwrap();
                assert_eq!(out.status, Termination::Exited(0));
                assert_eq!(reaper.orphans_reaped(), 0);
            },
        );
    }
}
