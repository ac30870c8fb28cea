//! Running a short command to completion and reading its output: a `command`
//! secret source.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::mem::take;
use std::os::fd::AsFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use zeroize::{Zeroize, Zeroizing};

use super::start::{registered, spawn_direct, start};
use super::{ChildSetup, DEFAULT_RESET_SIGNALS, SpawnError, SpawnSpec, kill_group};
use crate::auth::Termination;
use crate::reaper::{self, ExitWaiter, Reaper, ReaperHandle};

/// The most output [`run_capture`] keeps; a secret command printing more is broken.
pub(crate) const CAPTURE_LIMIT: usize = 16 << 20;

/// How long [`run_capture`] waits for a SIGKILLed command to be collected.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The result of [`run_capture`]. Its `Debug` shows sizes only: the output of a
/// secret command *is* the secrets.
pub(crate) struct Captured {
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
#[cfg(test)]
pub(crate) fn run_capture(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    timeout: Duration,
    reaper: Option<&ReaperHandle>,
) -> Result<Captured, SpawnError> {
    run_capture_as(argv, env, cwd, timeout, reaper, None)
}

/// [`run_capture`] as the user and groups of `creds` (a worker's `user`/`group`,
/// for its `ready = { exec = … }` probe); agentsup's own when `None`.
pub(crate) fn run_capture_as(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    timeout: Duration,
    reaper: Option<&ReaperHandle>,
    creds: Option<crate::sys::creds::Creds>,
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
        creds,
    };
    let setup = ChildSetup {
        pdeathsig: true,
        take_terminal: false,
        stdout_socket: true,
        ignore: &[],
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

/// Reads both pipes until both reach EOF, multiplexed with `poll` so a command that
/// fills one pipe while we read the other cannot deadlock. Also watches for the
/// command's own exit: from then on only what is already buffered counts. Reading
/// stops when nothing more is ready, and a descriptor still open then (a
/// background process it started holds it, or another process that copied it
/// with `pidfd_getfd`) marks the output as leaked: nothing written after the
/// command exited is taken for its output, and nobody holding a copy can stall it.
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
    let mut exited: Option<Termination> = None;
    loop {
        let open: Vec<usize> = (0..2).filter(|&i| streams[i].0.is_some()).collect();
        if open.is_empty() {
            let [(_, mut out), (_, mut err)] = streams;
            return Ok((take(&mut out), take(&mut err), exited, false));
        }
        if exited.is_none() {
            match exit.poll_once() {
                Ok(status) => exited = status,
                Err(e) => return Err(ReadStop::Io(e)),
            }
        }
        if deadline <= Instant::now() {
            return Err(ReadStop::Deadline);
        }
        // Once it exited, no waiting: what is buffered now is all it wrote.
        // Before, wake at least every 100 ms to notice the exit.
        let left = if exited.is_some() {
            Duration::ZERO
        } else {
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        // Round up, so we never spin on a sub-millisecond remainder.
        let millis = if left.is_zero() {
            0
        } else {
            i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
        };
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
        if let Some(status) = exited
            && !ready.iter().any(|r| *r)
        {
            let [(_, mut out), (_, mut err)] = streams;
            return Ok((take(&mut out), take(&mut err), Some(status), true));
        }
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
