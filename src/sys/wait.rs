//! Waiting for children: `waitpid` for one pid and the `waitid(WNOWAIT)` peek the
//! reaper and `exec` use to signal a group while its leader is still a zombie.
//!
//! Not nix's `waitpid`/`waitid`: they decode the status into a `Signal`, which has
//! no real-time signals, so a child killed by `SIGRTMIN+n` comes back as `EINVAL`
//! (and from `waitpid`, after the status was already consumed). These return the
//! raw status and pid; [`crate::reaper`] decodes them with `libc::WIFEXITED` & co.

use std::io;

/// Whose exit [`peek_exited`] looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// Any child.
    Any,
    /// This one child (> 0).
    Pid(libc::pid_t),
}

/// `waitpid(pid, WNOHANG unless block)`: reaps `pid` (> 0) and returns its raw
/// status, or `None` when `block` is false and it has not changed state. One call;
/// `EINTR` is returned to the caller as an error.
pub fn waitpid(pid: libc::pid_t, block: bool) -> io::Result<Option<libc::c_int>> {
    let mut status: libc::c_int = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: `status` is a live, writable c_int for the duration of the call; the
    // call touches no other memory of ours.
    match unsafe { libc::waitpid(pid, &mut status, flags) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}

/// `waitid(WEXITED | WNOWAIT)`: the pid of a child of `target` that has exited,
/// *without* reaping it (it stays a zombie, keeping its pid and group id
/// reserved), or `None` when `block` is false and none has. One call; `EINTR` and
/// `ECHILD` are returned to the caller as errors.
pub(crate) fn peek_exited(target: Target, block: bool) -> io::Result<Option<u32>> {
    let (idtype, id) = match target {
        Target::Any => (libc::P_ALL, 0),
        Target::Pid(pid) => (libc::P_PID, pid as libc::id_t),
    };
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    // SAFETY: siginfo_t is plain old data (integers and a union of integers), so
    // all-zero bytes are a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is live and writable for the duration of the call, which
    // writes only into it.
    if unsafe { libc::waitid(idtype, id, &mut info, flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded with WEXITED, so the kernel either filled in a
    // SIGCHLD siginfo, whose `_sigchld` member starts with si_pid (what this
    // accessor reads), or (WNOHANG, nothing exited) left the zeroed value: 0.
    let pid = unsafe { info.si_pid() };
    Ok(u32::try_from(pid).ok().filter(|&p| p > 0))
}
