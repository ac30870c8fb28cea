//! The guard: a small process that outlives a SIGKILLed agentsup just long enough
//! to kill the process groups of its workers (SPEC 5: "no process it started
//! survives it").
//!
//! `PR_SET_PDEATHSIG` takes a worker's own process with agentsup, but not the
//! worker's children (`sh -c` wrappers, Celery's prefork pool, `npm start` → node),
//! which the kernel hands to init instead. Inside a container that does not
//! matter: agentsup is PID 1 and the kernel kills the whole PID namespace with it,
//! so no guard is started there. On a host, `agentsup run` forks a guard (named
//! `agentsup-guard`) into its own process group, with a pipe from agentsup.
//! agentsup writes `+PGID` when a run starts and `-PGID` once that run's group is
//! gone. The guard ignores every stop signal and only watches the pipe: when it
//! closes, agentsup has exited (cleanly, with every group already removed, or
//! killed), and the guard SIGKILLs the groups still listed.
//!
//! Forked, not re-executed: `run` forks it first thing, while agentsup is still
//! one thread and has loaded no secret source, so the child may use the standard
//! library and holds no secret beyond agentsup's own environment. A fork maps only
//! the pages the guard's loop touches, where re-executing the binary mapped the
//! loader, libc and the start-up code of the whole binary again (with 200
//! workers: 3.7 MB of RSS re-executed, 1.5 MB forked, most of it code pages shared
//! with agentsup; 0.5 MB in the laid-out build of scripts/build-dist.sh). So its
//! command line reads like agentsup's; its name (`comm`, what `ps -e`, `top` and
//! `pgrep` show) is `agentsup-guard`.
//!
//! Limits: a descendant that left its worker's process group (`setsid`, a daemon)
//! is not covered; neither is a SIGKILL of agentsup and the guard together
//! (`pkill -9 agentsup` matches the guard's name, `agentsup-guard`, too).
//!
//! Hand-written because no crate does this.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, setpgid};

use crate::sys::process::ForkResult;

/// The write end of the guard's pipe, once started.
static PIPE: Mutex<Option<File>> = Mutex::new(None);
/// The guard's pid, 0 if none.
static PID: AtomicU32 = AtomicU32::new(0);

/// What a missing guard means, for the warnings.
const NO_GUARD: &str = "if agentsup is killed with SIGKILL, its workers' own children will \
                        survive it (systemd's KillMode=control-group or a container cleans \
                        them up instead)";

/// True if `pid` is the guard: the sweep of agentsup's leftover children at the
/// end of a run must not kill it before it is told the run ended well.
pub(crate) fn is_guard(pid: u32) -> bool {
    pid != 0 && PID.load(Ordering::SeqCst) == pid
}

/// Forks the guard, unless agentsup is PID 1 (the kernel does its job there).
///
/// Must be called while the process has one thread: a fork copies only the
/// calling thread, and a lock another thread held would stay locked in the
/// child. With more threads no guard is started (a library caller of `run` in a
/// multi-threaded program gets the warning and no guard). A guard that cannot start
/// returns the warning to log (logging is not set up this early); `run` carries
/// on without it.
pub(crate) fn start() -> Result<(), String> {
    if std::process::id() == 1 {
        return Ok(());
    }
    match crate::procfs::stat_field("self", 20) {
        Some(1) => {}
        n => {
            let n = n.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
            return Err(format!(
                "cannot start agentsup's guard: the process already runs {n} threads; {NO_GUARD}"
            ));
        }
    }
    // Close-on-exec: a worker that inherited the write end would hold the pipe
    // open after agentsup died, and the guard would never act.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
        format!("cannot start agentsup's guard (creating its pipe: {e}); {NO_GUARD}")
    })?;
    // One thread (checked above; sys re-checks): the child may use std.
    match crate::sys::process::fork_single_threaded() {
        Ok(ForkResult::Child) => {
            drop(write_end);
            guard_main(read_end)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(read_end);
            // Also here, as the child does: whichever runs first, the guard is in
            // its own group before a Ctrl-C can reach agentsup's.
            let _ = setpgid(child, child);
            PID.store(child.as_raw() as u32, Ordering::SeqCst);
            *PIPE.lock().unwrap_or_else(PoisonError::into_inner) = Some(File::from(write_end));
            // Not waited for here: it exits after agentsup, or is reaped by the
            // reaper as an adopted child if it ever exits first.
            Ok(())
        }
        Err(e) => Err(format!("cannot start agentsup's guard ({e}); {NO_GUARD}")),
    }
}

/// Lists a worker's process group with the guard.
pub(crate) fn watch(pgid: u32) {
    send(b'+', pgid);
}

/// Removes a process group that is gone.
pub(crate) fn unwatch(pgid: u32) {
    send(b'-', pgid);
}

/// Gives the guard a directory to remove if agentsup dies: the key files of
/// `on_rotation = "file"` (see [`crate::keys_dir`]) must not outlive it. A path
/// too long for one order (the guard reads at most [`MAX_ORDER`] bytes a line)
/// is not sent; the next run's sweep removes that directory instead.
pub(crate) fn remove_on_death(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dir.as_os_str().as_bytes();
    if bytes.len() + 2 > MAX_ORDER || bytes.contains(&b'\n') {
        return;
    }
    let mut pipe = PIPE.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(w) = pipe.as_mut() else { return };
    let mut line = Vec::with_capacity(bytes.len() + 2);
    line.push(b'K');
    line.extend_from_slice(bytes);
    line.push(b'\n');
    // Under PIPE_BUF (4096): one atomic write, as for the other orders.
    if w.write_all(&line).is_err() {
        *pipe = None;
    }
}

/// Longest order line the guard reads (a `K` path included); under PIPE_BUF.
const MAX_ORDER: usize = 1024;

/// `run` ended normally with every worker stopped: the guard exits without
/// killing anything. A group still listed then could only be a bookkeeping slip,
/// and its id may already belong to someone else.
pub(crate) fn finish() {
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

/// The guard's life, in the forked child. Never returns. Not inlined: the dist
/// build finds the guard's code by this name (scripts/layout/order.py).
#[inline(never)]
fn guard_main(pipe: OwnedFd) -> ! {
    // Its own name in `ps -e`, `top` and `pgrep`, so an operator can tell it from
    // agentsup.
    let _ = nix::sys::prctl::set_name(c"agentsup-guard");
    // Its own group: a Ctrl-C or a group kill aimed at agentsup's group must not
    // take the guard along. A failure of any of these only leaves the guard in
    // agentsup's group or holding a descriptor; it still does its job.
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        let _ = crate::sys::signal::ignore(sig);
    }
    // Hold none of agentsup's descriptors (whoever reads agentsup's output waits
    // for every writer to close it): the pipe becomes stdin, stdout and stderr go
    // to /dev/null, everything else is closed.
    let _ = nix::unistd::dup2_stdin(&pipe);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    crate::sys::fd::close_from_except(3, -1);
    std::mem::forget(pipe); // its number was closed just above; fd 0 is the pipe
    let mut groups = Vec::new();
    let mut dirs = Vec::new();
    if !read_orders(&mut Stdin, &mut groups, &mut dirs) {
        // agentsup is gone. Whatever it still listed must not outlive it.
        for pgid in groups {
            if let Ok(pgid @ 2..) = libc::pid_t::try_from(pgid) {
                // Errors (already gone) ignored.
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
        // Key files (on_rotation = "file"), after the workers that read them.
        for dir in dirs {
            let _ = std::fs::remove_dir_all(std::path::Path::new(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&dir),
            ));
        }
    }
    // `_exit`, not `exit`: the child must not flush or drop what it copied from
    // agentsup (a half-written stdout buffer would be printed twice).
    crate::sys::process::exit_now(0)
}

/// Descriptor 0, read with plain `read(2)`: no buffer or lock (`std::io::stdin()`'s
/// handle is only borrowed for its number).
struct Stdin;

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(nix::unistd::read(std::io::stdin().as_fd(), buf)?)
    }
}

/// Applies agentsup's `+PGID` / `-PGID` lines to `groups` and `KPATH` lines to
/// `dirs` until the input ends (false: agentsup is gone) or says `=` (true: it
/// ended well). Anything else is skipped, never a panic: only agentsup writes here.
fn read_orders(input: &mut impl Read, groups: &mut Vec<u32>, dirs: &mut Vec<Vec<u8>>) -> bool {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::with_capacity(16);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        for &b in &buf[..n] {
            if b != b'\n' {
                // A runaway line stays bounded (and is then dropped below).
                if line.len() <= MAX_ORDER {
                    line.push(b);
                }
                continue;
            }
            if line.first() == Some(&b'K') && line.len() > 1 && line.len() <= MAX_ORDER {
                dirs.push(line[1..].to_vec());
                line.clear();
                continue;
            }
            let order = line.split_first().and_then(|(&op, pgid)| {
                let pgid = std::str::from_utf8(pgid).ok()?.parse::<u32>().ok()?;
                Some((op, pgid))
            });
            line.clear();
            match order {
                Some((b'+', pgid)) if !groups.contains(&pgid) => groups.push(pgid),
                Some((b'-', pgid)) => {
                    if let Some(i) = groups.iter().position(|&g| g == pgid) {
                        groups.swap_remove(i);
                    }
                }
                Some((b'=', _)) => return true,
                _ => {}
            }
        }
    }
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

    /// Reads the way a pipe may: a few bytes at a time, so lines split.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(3).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn orders_split_across_reads_are_applied_and_garbage_is_skipped() {
        let mut groups = Vec::new();
        let mut dirs = Vec::new();
        let input =
            "+100\n+200\n+200\n-100\n+30x\né5\n\nK/dev/shm/agentsup-keys-1\n+300\n".as_bytes();
        assert!(
            !read_orders(&mut Trickle(input), &mut groups, &mut dirs),
            "EOF means agentsup is gone"
        );
        assert_eq!(groups, [200, 300], "listed once each, 100 removed");
        assert_eq!(dirs, [b"/dev/shm/agentsup-keys-1".to_vec()]);
    }

    #[test]
    fn a_clean_finish_is_told_apart_from_agentsup_vanishing() {
        let mut groups = Vec::new();
        assert!(read_orders(
            &mut Trickle(b"+7\n=0\n+8\n"),
            &mut groups,
            &mut Vec::new()
        ));
        assert_eq!(groups, [7], "nothing after '=' is read");
    }
}
