//! The guard: a small process that outlives a SIGKILLed agentsup just long enough
//! to kill the process groups of its workers (SPEC 5: "no process it started
//! survives it").
//!
//! `PR_SET_PDEATHSIG` takes a worker's own process with agentsup, but not the
//! worker's children (`sh -c` wrappers, Celery's prefork pool, `npm start` → node),
//! which the kernel hands to init instead. Inside a container that does not
//! matter: agentsup is PID 1 and the kernel kills the whole PID namespace with it,
//! so no guard is started there. On a host, `agentsup run` starts
//! `agentsup __guard` (itself, re-executed) in its own process group, with a pipe
//! on its stdin. agentsup writes `+PGID` when a run starts and `-PGID` once that
//! run's group is gone. The guard ignores every stop signal and only watches the
//! pipe: when it closes, agentsup has exited (cleanly, with every group already
//! removed, or killed), and the guard SIGKILLs the groups still listed.
//!
//! Limits: a descendant that left its worker's process group (`setsid`, a daemon)
//! is not covered; neither is a SIGKILL of agentsup and the guard together
//! (`pkill -9 agentsup` matches the guard's name, `agentsup-guard`, too).
//!
//! Hand-written because no crate does this. The guard costs about 1 MB of RSS (one
//! small process; it never allocates per worker beyond a set of integers).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

/// The hidden first argument that turns the binary into the guard.
pub const GUARD_ARG: &str = "__guard";

/// The write end of the guard's pipe, once started.
static PIPE: Mutex<Option<std::process::ChildStdin>> = Mutex::new(None);
/// The guard's pid, 0 if none.
static PID: AtomicU32 = AtomicU32::new(0);

/// True if `pid` is the guard: the sweep of agentsup's leftover children at the
/// end of a run must not kill it before it is told the run ended well.
pub fn is_guard(pid: u32) -> bool {
    pid != 0 && PID.load(Ordering::SeqCst) == pid
}

/// Starts the guard, unless agentsup is PID 1 (the kernel does its job there).
/// A guard that cannot start is reported and `run` carries on without it.
pub fn start() {
    if std::process::id() == 1 {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "cannot find agentsup's own binary to start its guard ({e}); if agentsup is \
                 killed with SIGKILL, its workers' own children will survive it (systemd's \
                 KillMode=control-group or a container cleans them up instead)"
            );
            return;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg(GUARD_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Its own group: a Ctrl-C or a group kill aimed at agentsup's group must
        // not take the guard along.
        .process_group(0);
    match cmd.spawn() {
        Ok(mut child) => {
            PID.store(child.id(), Ordering::SeqCst);
            *PIPE.lock().unwrap_or_else(PoisonError::into_inner) = child.stdin.take();
            // Not waited for here: it exits after agentsup, or is reaped by the
            // reaper as an adopted child if it ever exits first.
        }
        Err(e) => tracing::warn!(
            "cannot start agentsup's guard ({e}); if agentsup is killed with SIGKILL, its \
             workers' own children will survive it (systemd's KillMode=control-group or a \
                 container cleans them up instead)"
        ),
    }
}

/// Lists a worker's process group with the guard.
pub fn watch(pgid: u32) {
    send(b'+', pgid);
}

/// Removes a process group that is gone.
pub fn unwatch(pgid: u32) {
    send(b'-', pgid);
}

/// `run` ended normally with every worker stopped: the guard exits without
/// killing anything. A group still listed then could only be a bookkeeping slip,
/// and its id may already belong to someone else.
pub fn finish() {
    send(b'=', 0);
    PIPE.lock().unwrap_or_else(PoisonError::into_inner).take();
}

fn send(op: u8, pgid: u32) {
    let mut pipe = PIPE.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(w) = pipe.as_mut() else { return };
    // One short line per write, well under PIPE_BUF: the guard reads whole lines.
    let line = format!("{}{pgid}\n", op as char);
    if w.write_all(line.as_bytes()).is_err() {
        // The guard is gone (killed by hand): nothing more to tell it.
        *pipe = None;
    }
}

/// The guard's main loop (`agentsup __guard`). Returns the exit status.
pub fn run_guard() -> u8 {
    // Its own name in `ps` and `top`, so an operator can tell it from agentsup.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"agentsup-guard".as_ptr()) };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: setting a signal to SIG_IGN has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut groups: HashSet<u32> = HashSet::new();
    let stdin = std::io::stdin().lock();
    for line in BufReader::new(stdin).lines() {
        let Ok(line) = line else { break };
        // Only agentsup writes here, in ASCII; anything else is skipped, never a panic.
        let Some((op, pgid)) = line.split_at_checked(1) else {
            continue;
        };
        let Ok(pgid) = pgid.parse::<u32>() else {
            continue;
        };
        match op {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            "=" => return 0,
            _ => {}
        }
    }
    // agentsup is gone. Whatever it still listed must not outlive it.
    for pgid in groups {
        if pgid > 1 {
            // SAFETY: killpg on a process group id; errors (already gone) ignored.
            unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_guard_watching_is_a_no_op() {
        // Library users and `check` never start one; these must not panic or block.
        watch(12345);
        unwatch(12345);
    }
}
