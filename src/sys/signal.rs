//! Signals by number: sending, dispositions, who sent one, and forwarding the
//! fault signals that `exec` receives from other processes.
//!
//! By number, not nix's `Signal`: that enum has no real-time signals, and `exec`
//! forwards `SIGRTMIN..=SIGRTMAX` as well. Where a caller only ever sends a
//! standard signal it uses nix directly.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// `kill(pid, sig)` for one process; `pid` must be > 0 (the caller checks: 0 and
/// negative values mean groups or everyone).
pub(crate) fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    debug_assert!(pid > 0);
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `killpg(pgid, sig)`; `pgid` must be > 1 or 1 (the caller checks: 0 is our own
/// group).
pub(crate) fn killpg(pgid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    debug_assert!(pgid > 0);
    // SAFETY: killpg takes two integers and touches no memory of ours.
    if unsafe { libc::killpg(pgid, sig) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `sig` to `SIG_IGN` in this process.
pub(crate) fn ignore(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: installing SIG_IGN runs no code of ours on delivery, so it cannot
    // break async-signal-safety; signal(2) itself takes integers only.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when `sig`'s disposition in this process is `SIG_IGN` (as `nohup` leaves
/// SIGHUP). Only reads the disposition.
pub(crate) fn is_ignored(sig: libc::c_int) -> bool {
    current(sig).is_some_and(|sa| sa.sa_sigaction == libc::SIG_IGN)
}

/// The current action of `sig`, or None for an invalid number.
fn current(sig: libc::c_int) -> Option<libc::sigaction> {
    // SAFETY: sigaction is plain old data; all-zero bytes are a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `sa` is live and writable.
    (unsafe { libc::sigaction(sig, ptr::null(), &mut sa) } == 0).then_some(sa)
}

/// Who sent a signal: `si_pid` when a process sent it (`kill`, `sigqueue`,
/// `tgkill`: `si_code` <= 0); `None` for the kernel's own (`SI_KERNEL`: a terminal
/// hang-up, Ctrl-C) and for a sender outside our pid namespace (`si_pid` 0).
pub(crate) fn sender(info: &libc::siginfo_t) -> Option<u32> {
    if info.si_code > 0 {
        return None;
    }
    // SAFETY: for a signal sent by a process (si_code <= 0) the kernel fills in
    // the `_kill`/`_rt` member of the union, whose first field is si_pid, the
    // field this accessor reads.
    let pid = unsafe { info.si_pid() };
    u32::try_from(pid).ok().filter(|&p| p != 0)
}

/// The fault signals [`FaultForwarding`] handles: what the kernel sends for a
/// crash of agentsup itself, but which anyone of agentsup's uid (or root, or
/// `docker kill -s`) can also send with `kill(2)`.
pub(crate) const FAULTS: [libc::c_int; 7] = [
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
    libc::SIGSYS,
];

/// Write end of the fault pipe (non-blocking), -1 until first installed. Never
/// closed once set: a handler running on another thread may be about to use it.
static FAULT_PIPE: AtomicI32 = AtomicI32::new(-1);
/// True while a [`FaultForwarding`] wants the signals.
static FORWARDING: AtomicBool = AtomicBool::new(false);
/// The read end of the fault pipe, once installed.
static READ: OnceLock<OwnedFd> = OnceLock::new();
/// Serialises the first installation.
static INSTALLING: Mutex<()> = Mutex::new(());
/// The actions [`install`] replaced, indexed like [`FAULTS`]; set before the
/// handler is installed, so the handler always finds them.
static OLD: OnceLock<[libc::sigaction; FAULTS.len()]> = OnceLock::new();

/// Receives the fault signals ([`FAULTS`]) that *another process* sends to this
/// one, for `exec` to forward to its command, instead of dying of them with the
/// command left running.
///
/// A fault that is agentsup's own (the kernel's `SIGSEGV` for a bad access, a
/// stack overflow, `abort()`, a signal agentsup sends itself) is not touched: the
/// handler puts back the action it replaced (the default, or Rust's stack-overflow
/// handler) and lets the signal take it, so a crash is still a crash. The same
/// holds while no `FaultForwarding` is active.
///
/// The handler is installed on the first [`FaultForwarding::start`] and stays;
/// [`FaultForwarding::stop`] ends forwarding and wakes [`FaultForwarding::recv`].
#[derive(Clone, Copy)]
pub(crate) struct FaultForwarding {
    read: &'static OwnedFd,
}

impl FaultForwarding {
    /// Starts forwarding; only one may be active at a time (`exec` runs once).
    pub(crate) fn start() -> io::Result<FaultForwarding> {
        let guard = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
        if READ.get().is_none() {
            let read = install()?;
            let _ = READ.set(read);
        }
        drop(guard);
        let read = READ
            .get()
            .ok_or_else(|| io::Error::other("the fault pipe is not installed"))?;
        // Whatever a previous session left unread is stale.
        drain(read);
        FORWARDING.store(true, Ordering::SeqCst);
        Ok(FaultForwarding { read })
    }

    /// Blocks until another process sends a fault signal; returns its number, or
    /// `None` once forwarding stopped (see [`FaultForwarding::stop`]).
    pub(crate) fn recv(&self) -> Option<libc::c_int> {
        let mut byte = [0u8];
        loop {
            match nix::poll::poll(
                &mut [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)],
                PollTimeout::NONE,
            ) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            }
            match nix::unistd::read(self.read, &mut byte) {
                Ok(1) if byte[0] != 0 => return Some(libc::c_int::from(byte[0])),
                Ok(1) => return None,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                _ => return None,
            }
        }
    }

    /// Stops forwarding (a fault signal from elsewhere then does what it did
    /// before) and wakes a thread blocked in [`FaultForwarding::recv`].
    pub(crate) fn stop(&self) {
        FORWARDING.store(false, Ordering::SeqCst);
        write_byte(0);
    }
}

/// Reads whatever is in the (non-blocking) pipe.
fn drain(read: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(read, &mut buf), Ok(n) if n > 0) {}
}

fn write_byte(b: u8) {
    let fd = FAULT_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: a 1-byte write from a local to a descriptor that is never
        // closed; the write end is non-blocking, so a full pipe drops the byte.
        unsafe { libc::write(fd, (&raw const b).cast(), 1) };
    }
}

/// Creates the pipe and installs [`on_fault`] for every fault signal, keeping the
/// actions it replaces in [`OLD`]; returns the read end.
fn install() -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    // Both ends non-blocking: the handler must never block, and the reader waits
    // in poll.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let mut old = [current(libc::SIGSEGV).ok_or_else(io::Error::last_os_error)?; FAULTS.len()];
    for (slot, &sig) in old.iter_mut().zip(&FAULTS) {
        *slot = current(sig).ok_or_else(io::Error::last_os_error)?;
    }
    let _ = OLD.set(old);
    FAULT_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(write); // never closed: see FAULT_PIPE
    // SAFETY: sigaction is plain old data; all-zero bytes are a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_fault as extern "C" fn(_, _, _) as libc::sighandler_t;
    // On the alternate stack Rust sets up for each thread: a stack overflow must
    // still reach Rust's handler (which on_fault chains to) rather than fault
    // again on the exhausted stack.
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    for &sig in &FAULTS {
        // SAFETY: `sa` is a fully initialised action whose handler is
        // async-signal-safe (see on_fault); the old action was saved above.
        if unsafe { libc::sigaction(sig, &sa, ptr::null_mut()) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(read)
}

/// The fault handler. Async-signal-safe: atomics, `getpid`, `write`, `sigaction`,
/// `raise`, and the replaced handler (which was itself a signal handler).
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let info_ref = unsafe { &*info };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let from_elsewhere = info_ref.si_code <= 0 && sender(info_ref).is_none_or(|p| p != me as u32);
    if from_elsewhere && FORWARDING.load(Ordering::SeqCst) {
        write_byte(sig as u8);
        return;
    }
    let Some(old) = OLD
        .get()
        .and_then(|old| FAULTS.iter().position(|&s| s == sig).map(|i| old[i]))
    else {
        return;
    };
    // Put back what we replaced, and let the signal have that effect.
    // SAFETY: `old` is an action the kernel handed us; sigaction copies it.
    unsafe { libc::sigaction(sig, &old, ptr::null_mut()) };
    if old.sa_sigaction == libc::SIG_DFL {
        // Pending (it is blocked while we run), delivered with the default action
        // as this handler returns: the process ends as it would have.
        // SAFETY: raise has no memory preconditions.
        unsafe { libc::raise(sig) };
    } else if old.sa_sigaction != libc::SIG_IGN {
        // A handler (Rust's stack-overflow handler for SIGSEGV/SIGBUS): call it
        // as the kernel would have.
        if old.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: with SA_SIGINFO the stored value is a three-argument
            // handler; we pass on the kernel's own arguments.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(old.sa_sigaction) };
            f(sig, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO the stored value is a one-argument
            // handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(old.sa_sigaction) };
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const MODE: &str = "AGENTSUP_FAULT_TEST_MODE";

    /// Runs this test binary again as `name` in `mode` and returns the signal that
    /// ended it (None: it exited).
    fn child_ends_by(name: &str, mode: &str) -> Option<i32> {
        #[allow(clippy::disallowed_methods)] // the test waits on its own child
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(MODE, mode)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        status.signal()
    }

    #[test]
    fn a_fault_of_our_own_still_ends_the_process() {
        const NAME: &str = "sys::signal::tests::a_fault_of_our_own_still_ends_the_process";
        match std::env::var(MODE).as_deref() {
            Ok("raise") => {
                let _f = FaultForwarding::start().unwrap();
                // Sent by ourselves (si_pid is our pid): not forwarded, so the
                // default action ends us. (Not SIGSEGV: Rust's own handler, which
                // ours hands it to, lets a SIGSEGV sent with kill(2) pass.)
                kill(std::process::id() as i32, libc::SIGILL).unwrap();
                return;
            }
            Ok("abort") => {
                let _f = FaultForwarding::start().unwrap();
                std::process::abort();
            }
            Ok("fault") => {
                let _f = FaultForwarding::start().unwrap();
                // SAFETY: deliberately not: a read of address 0 faults (SEGV_MAPERR,
                // si_code > 0), which is what this test is about.
                let v = unsafe { std::ptr::read_volatile(std::ptr::null::<u8>()) };
                std::hint::black_box(v);
                return;
            }
            _ => {}
        }
        assert_eq!(child_ends_by(NAME, "raise"), Some(libc::SIGILL));
        assert_eq!(child_ends_by(NAME, "abort"), Some(libc::SIGABRT));
        assert_eq!(child_ends_by(NAME, "fault"), Some(libc::SIGSEGV));
    }

    #[test]
    fn a_fault_signal_from_another_process_is_received_not_fatal() {
        const NAME: &str =
            "sys::signal::tests::a_fault_signal_from_another_process_is_received_not_fatal";
        if std::env::var(MODE).as_deref() == Ok("receive") {
            let f = FaultForwarding::start().unwrap();
            for sig in [libc::SIGSEGV, libc::SIGILL, libc::SIGABRT, libc::SIGBUS] {
                let me = std::process::id().to_string();
                #[allow(clippy::disallowed_methods)] // waited on here
                let sent = std::process::Command::new("kill")
                    .args([&format!("-{sig}"), &me])
                    .status()
                    .unwrap();
                assert!(sent.success());
                assert_eq!(f.recv(), Some(sig));
            }
            f.stop();
            assert_eq!(f.recv(), None, "stop wakes the receiver");
            return;
        }
        assert_eq!(child_ends_by(NAME, "receive"), None);
    }
}
