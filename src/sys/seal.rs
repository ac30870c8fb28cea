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
//! from writing a core at all. It survives `fork` (the guard inherits it) and is
//! reset by `execve` of an ordinary binary, so workers are not affected. The
//! soft core limit is set to 0 as well (belt and braces, and visible in
//! `/proc/PID/limits`); workers get the original limit back before their `exec`
//! (`core_limit_for_children`), so an operator's `ulimit -c` still applies to
//! them.

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft `RLIMIT_CORE` agentsup started with; `u64::MAX` is `RLIM_INFINITY`
/// (the kernel's value on 64-bit Linux). `NOT_SEALED` until [`seal`] ran.
static ORIGINAL_CORE: AtomicU64 = AtomicU64::new(NOT_SEALED);
const NOT_SEALED: u64 = u64::MAX - 1;

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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read/write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            ORIGINAL_CORE.store(lim.rlim_cur, Ordering::SeqCst);
            let sealed = libc::rlimit {
                rlim_cur: 0,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &sealed) != 0 {
                problems.push(format!(
                    "cannot set agentsup's core file size limit to 0 ({})",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    problems
}

/// The core limit a child should get back, or None to leave it as inherited
/// (agentsup was not sealed, e.g. a library caller).
pub(crate) fn core_limit_for_children() -> Option<libc::rlimit> {
    let cur = ORIGINAL_CORE.load(Ordering::SeqCst);
    if cur == NOT_SEALED || cur == 0 {
        return None;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) } != 0 {
        return None;
    }
    Some(libc::rlimit {
        rlim_cur: cur.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    })
}

/// Restores `lim` as the calling process's core limit. Async-signal-safe: one raw
/// `prlimit64` system call on the calling process (no libc wrapper state).
pub(crate) fn restore_core_limit(lim: &libc::rlimit) {
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
        )
    };
}
