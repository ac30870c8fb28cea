//! Sealing agentsup's own process: no same-uid process may read its memory or
//! environment, and no core file is written.
//!
//! agentsup holds every worker's secrets at once. Without this, any worker (it runs
//! as agentsup's uid unless `user` is set) could read `/proc/<agentsup>/environ`,
//! scan `/proc/<agentsup>/mem`, or raise agentsup's core limit with `prlimit` and
//! send it SIGABRT for a core file full of keys.
//!
//! `PR_SET_DUMPABLE 0` makes `/proc/PID/{environ,mem,maps,fd/*}` root-owned and
//! `ptrace` attach fail for other processes of the same uid, and stops the kernel
//! from writing a core at all (with `fs.suid_dumpable = 2` it still writes one,
//! readable by root only). It survives `fork` (the guard inherits it) and is reset
//! by `execve` of an ordinary binary, so workers are not affected.
//!
//! The core limit is set to 0 as well, **soft and hard**: a soft limit alone is
//! raised back by any process of the same uid (`prlimit --pid <agentsup>
//! --core=unlimited` needs no privilege), a hard limit of 0 only with
//! `CAP_SYS_RESOURCE`. Lowering the hard limit is for good, though, and every
//! process agentsup starts inherits it, so what the workers get decides:
//!
//! | agentsup may raise a hard limit (`CAP_SYS_RESOURCE`) | soft core limit it started with | agentsup and its guard | workers, command sources, `exec`'s child |
//! |---|---|---|---|
//! | yes (root, outside a user namespace or container that drops the capability) | any | 0, hard 0 | the original soft and hard limits, restored in the child routine before `execve` (before a `user` switch drops the capability) |
//! | no | 0 (the usual default) | 0, hard 0 | 0, hard 0: they could not write a core anyway, and now cannot `ulimit -c` it up either |
//! | no | above 0 (the operator ran `ulimit -c …` to get cores) | 0, hard **kept** | the original soft limit: the operator asked for their cores; a same-uid process may raise agentsup's soft limit back, but agentsup stays non-dumpable |
//!
//! Whether the hard limit can be raised again is tried, not guessed from the uid
//! (root in a container usually lacks `CAP_SYS_RESOURCE`): a forked probe lowers its
//! own hard limit and raises it back.

use std::sync::atomic::{AtomicU64, Ordering};

/// The core limit children get back before their `execve` (see the module docs),
/// as soft and hard; `NONE` in soft: they keep what they inherit (agentsup was not
/// sealed, e.g. a library caller, or nothing is to be restored).
static CHILD_SOFT: AtomicU64 = AtomicU64::new(NONE);
static CHILD_HARD: AtomicU64 = AtomicU64::new(NONE);
/// Not a limit: `RLIM_INFINITY` is `u64::MAX` on 64-bit Linux.
const NONE: u64 = u64::MAX - 1;

/// What [`seal`] does with the core limit `(soft, hard)` agentsup started with:
/// agentsup's own limit, and what children get back (see the module docs).
fn core_plan(soft: u64, hard: u64, can_raise: bool) -> (libc::rlimit, Option<libc::rlimit>) {
    let lim = |cur, max| libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    if can_raise {
        let back = (soft, hard) != (0, 0);
        (lim(0, 0), back.then(|| lim(soft, hard)))
    } else if soft == 0 {
        (lim(0, 0), None)
    } else {
        (lim(0, hard), Some(lim(soft, hard)))
    }
}

/// Seals the calling process; call first thing in `main`, before any secret is
/// loaded and before the guard is forked. Returns what could not be done, for a
/// warning once logging is set up (neither failure happens on Linux in practice).
pub fn seal() -> Vec<String> {
    let mut problems = Vec::new();
    // SAFETY: PR_SET_DUMPABLE takes an integer; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) } != 0 {
        problems.push(format!(
            "cannot make agentsup non-dumpable ({}): processes of its uid may read its memory",
            std::io::Error::last_os_error()
        ));
    }
    let mut start = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut start) } != 0 {
        return problems;
    }
    let can_raise = start.rlim_max != 0 && can_raise_core_hard_limit(&start);
    let (own, children) = core_plan(start.rlim_cur, start.rlim_max, can_raise);
    // SAFETY: setrlimit reads one rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &own) } != 0 {
        problems.push(format!(
            "cannot set agentsup's core file size limit to 0 ({})",
            std::io::Error::last_os_error()
        ));
        return problems;
    }
    if let Some(back) = children {
        CHILD_HARD.store(back.rlim_max, Ordering::SeqCst);
        CHILD_SOFT.store(back.rlim_cur, Ordering::SeqCst);
    }
    problems
}

/// Whether this process could raise its core hard limit back to `start.rlim_max`
/// after lowering it: tried in a forked child, since only the kernel knows
/// (`CAP_SYS_RESOURCE` in the initial user namespace). `false` when it cannot be
/// told (more than one thread, no fork).
fn can_raise_core_hard_limit(start: &libc::rlimit) -> bool {
    use nix::sys::wait::{WaitStatus, waitpid};
    match super::process::fork_single_threaded() {
        Ok(super::process::ForkResult::Child) => {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            set_core_raw(&zero);
            super::process::exit_now(if set_core_raw(start) { 0 } else { 1 })
        }
        Ok(super::process::ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return code == 0,
                Err(nix::errno::Errno::EINTR) => continue,
                _ => return false,
            }
        },
        Err(_) => false,
    }
}

/// The core limit a child should get back, or None to leave it as inherited.
pub(crate) fn core_limit_for_children() -> Option<libc::rlimit> {
    let cur = CHILD_SOFT.load(Ordering::SeqCst);
    (cur != NONE).then(|| libc::rlimit {
        rlim_cur: cur,
        rlim_max: CHILD_HARD.load(Ordering::SeqCst),
    })
}

/// Restores `lim` as the calling process's core limit. Async-signal-safe: one raw
/// `prlimit64` system call on the calling process (no libc wrapper state). A
/// failure (a hard limit above ours without `CAP_SYS_RESOURCE`) leaves the child
/// with the limit it inherited.
pub(crate) fn restore_core_limit(lim: &libc::rlimit) {
    set_core_raw(lim);
}

/// `prlimit64(self, RLIMIT_CORE, lim)`; whether it succeeded.
fn set_core_raw(lim: &libc::rlimit) -> bool {
    let wide = libc::rlimit64 {
        rlim_cur: lim.rlim_cur,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: prlimit64(0 = self, RLIMIT_CORE, new, NULL) reads one struct we own.
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_CORE,
            &wide as *const libc::rlimit64,
            std::ptr::null_mut::<libc::rlimit64>(),
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: u64 = libc::RLIM_INFINITY;

    fn pair(l: &libc::rlimit) -> (u64, u64) {
        (l.rlim_cur, l.rlim_max)
    }

    #[test]
    fn the_core_plan_seals_agentsup_and_gives_children_what_it_can() {
        // With CAP_SYS_RESOURCE: agentsup 0/0, children their own limits back.
        let (own, back) = core_plan(0, INF, true);
        assert_eq!(pair(&own), (0, 0));
        assert_eq!(back.map(|l| pair(&l)), Some((0, INF)));
        let (own, back) = core_plan(INF, INF, true);
        assert_eq!(pair(&own), (0, 0));
        assert_eq!(back.map(|l| pair(&l)), Some((INF, INF)));
        // Without, and no core wanted (the usual default): 0/0 for everyone.
        let (own, back) = core_plan(0, INF, false);
        assert_eq!(pair(&own), (0, 0));
        assert!(back.is_none());
        // Without, and cores wanted: the hard limit stays, children get theirs.
        let (own, back) = core_plan(4096, INF, false);
        assert_eq!(pair(&own), (0, INF));
        assert_eq!(back.map(|l| pair(&l)), Some((4096, INF)));
        // Nothing to restore.
        assert!(core_plan(0, 0, true).1.is_none());
    }
}
