//! The one child routine every process agentsup starts goes through (workers,
//! fork-mode templates, `command` sources, `exec`'s child).
//!
//! `clone(CLONE_VM | CLONE_VFORK)` shares agentsup's address space until `execve`,
//! so nothing is copied however big agentsup is (a `fork` copied ~20 MB of page
//! tables and write-protected every page: ~2 ms a spawn). The price is that the
//! child runs on agentsup's memory: it may make raw system calls only — no
//! allocation, no lock, no libc wrapper that updates process-wide state — and
//! everything it reads is built by [`spawn`]'s caller before the `clone`.
//!
//! In order, the child: arms `PR_SET_PDEATHSIG` (and leaves if the parent is
//! already gone), resets every caught signal and the listed ignored ones to the
//! default (then ignores the ones the caller keeps ignored), its own process group (and the terminal's foreground, for `exec`),
//! stdio onto 0/1/2, **every other descriptor closed**, the core limit agentsup
//! started with (as far as its hard limit allows: see `seal`), the worker's **user and group** (then PDEATHSIG again: the kernel
//! clears it on a credential change), `chdir`, an empty signal mask, `execve`. A
//! failure is reported as an errno over a close-on-exec pipe.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use zeroize::Zeroize;

use super::creds::Creds;

/// NUL-terminated strings and the NULL-terminated pointer array `execve` wants.
/// Wiped when dropped: for an environment, these are the secrets.
pub struct CArray {
    strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CArray {
    /// From byte strings; an interior NUL is an `InvalidInput` error.
    pub fn new<I, B>(items: I) -> io::Result<CArray>
    where
        I: IntoIterator<Item = B>,
        B: Into<Vec<u8>>,
    {
        let mut out = CArray {
            strings: Vec::new(),
            ptrs: Vec::new(),
        };
        for item in items {
            let c = CString::new(item).map_err(|e| {
                // The bytes that came back are a copy: wipe them too.
                e.into_vec().zeroize();
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "nul byte in an argument or variable",
                )
            })?;
            out.strings.push(c);
        }
        out.ptrs = out.strings.iter().map(|c| c.as_ptr()).collect();
        out.ptrs.push(ptr::null());
        Ok(out)
    }

    /// `NAME=value` entries, built without an intermediate `String` to wipe.
    pub fn env<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> io::Result<CArray> {
        CArray::new(pairs.into_iter().map(|(k, v)| {
            // Room for the NUL too, so CString::new does not reallocate (and leave
            // an unwiped copy behind).
            let mut b = Vec::with_capacity(k.len() + v.len() + 2);
            b.extend_from_slice(k.as_bytes());
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            b
        }))
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

impl Drop for CArray {
    fn drop(&mut self) {
        for s in &mut self.strings {
            s.zeroize();
        }
    }
}

/// What the child does, all of it resolved by the caller.
pub struct Spec<'a> {
    /// The file to execute.
    pub program: &'a CStr,
    /// argv, `argv[0]` included.
    pub argv: &'a CArray,
    /// The complete environment.
    pub envp: &'a CArray,
    /// The working directory.
    pub cwd: &'a CStr,
    /// Descriptors to put on 0, 1 and 2; -1 leaves agentsup's own in place.
    pub stdio: [libc::c_int; 3],
    /// A new process group whose id is the child's pid.
    pub own_group: bool,
    /// Make that group the terminal's foreground group (needs `own_group`).
    pub take_terminal: bool,
    /// Arm `PR_SET_PDEATHSIG(SIGKILL)`: only sound when the calling thread lives
    /// at least as long as the child.
    pub pdeathsig: bool,
    /// Signals set to `SIG_DFL` even when ignored (ignored dispositions survive
    /// `exec`).
    pub reset: &'a [libc::c_int],
    /// Signals set to `SIG_IGN`, after `reset` (what `exec` inherited ignored).
    pub ignore: &'a [libc::c_int],
    /// Credentials to switch to.
    pub creds: Option<&'a Creds>,
}

/// Everything the child reads, as plain values and pointers.
struct Ctx {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [libc::c_int; 3],
    own_group: bool,
    take_terminal: bool,
    pdeathsig: bool,
    parent: libc::pid_t,
    reset: *const libc::c_int,
    reset_len: usize,
    ignore: *const libc::c_int,
    ignore_len: usize,
    /// (uid, gid, groups pointer, groups length).
    creds: Option<(u32, u32, *const u32, usize)>,
    core: Option<libc::rlimit>,
    /// Write end of the close-on-exec error pipe, >= 3.
    report: libc::c_int,
}

/// Size of the child's stack: it only makes system calls.
const STACK: usize = 64 * 1024;

/// Starts `spec`; returns the pid once the child has called `execve` successfully,
/// or the errno that stopped it (the child is collected then). The caller holds
/// the reaper's registration lock across this call when a reaper runs.
pub fn spawn(spec: &Spec<'_>) -> io::Result<u32> {
    let (report_r, report_w) = pipe_cloexec_above_stdio()?;
    let ctx = Ctx {
        program: spec.program.as_ptr(),
        argv: spec.argv.as_ptr(),
        envp: spec.envp.as_ptr(),
        cwd: spec.cwd.as_ptr(),
        stdio: spec.stdio,
        own_group: spec.own_group,
        take_terminal: spec.take_terminal && spec.own_group,
        pdeathsig: spec.pdeathsig,
        parent: std::process::id() as libc::pid_t,
        reset: spec.reset.as_ptr(),
        reset_len: spec.reset.len(),
        ignore: spec.ignore.as_ptr(),
        ignore_len: spec.ignore.len(),
        creds: spec
            .creds
            .map(|c| (c.uid, c.gid, c.groups.as_ptr(), c.groups.len())),
        core: super::seal::core_limit_for_children(),
        report: report_w.as_raw_fd(),
    };
    let mut stack = vec![0u8; STACK];
    // SAFETY: `top` is the 16-byte aligned end of a live buffer; the child runs on
    // it only until it execs or exits, and CLONE_VFORK suspends this thread (so
    // `stack` and `ctx` stay alive) until then. Every signal is blocked across the
    // clone so that no handler of ours runs on the child's stack; the child resets
    // dispositions before unblocking.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(STACK) as usize & !15;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &ctx as *const Ctx as *mut libc::c_void,
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid == -1 {
            return Err(clone_err);
        }
        pid
    };
    drop(report_w);
    let mut buf = [0u8; 4];
    if File::from(report_r).read_exact(&mut buf).is_ok() {
        // It could not exec: collect it here (a running reaper is locked out by
        // our caller) and report the child's errno as std does.
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a local status.
        while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
    }
    Ok(pid as u32)
}

/// A close-on-exec pipe whose write end is not 0, 1 or 2 (which the child
/// overwrites with its stdio), so that the child can keep it open to the end.
fn pipe_cloexec_above_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, mut w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    if w.as_raw_fd() < 3 {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor >= 3 that we own.
        let moved = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if moved == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor from fcntl.
        w = unsafe { OwnedFd::from_raw_fd(moved) };
    }
    Ok((r, w))
}

/// Sends errno to the parent and exits 127.
///
/// # Safety
/// Only in the child; `ctx.report` is the error pipe's write end.
unsafe fn fail(ctx: &Ctx, errno: libc::c_int) -> ! {
    let bytes = errno.to_ne_bytes();
    // SAFETY: a 4-byte write from a local; _exit does not return.
    unsafe {
        libc::write(ctx.report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// errno of the calling thread (the spawning thread's, shared in a CLONE_VM child).
fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Arms PDEATHSIG, and leaves if the parent already died (the signal would never
/// come, aristanetworks/bst#74).
///
/// # Safety
/// Only in the child.
unsafe fn arm_pdeathsig(ctx: &Ctx) {
    // SAFETY: prctl with integers; getppid and _exit have no preconditions.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) == -1
        {
            fail(ctx, errno());
        }
        if libc::getppid() != ctx.parent {
            libc::_exit(1);
        }
    }
}

/// Runs in the child of `clone(CLONE_VM | CLONE_VFORK)`, on its own stack, with
/// every signal blocked. Raw system calls only (see the module docs).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the Ctx the parent keeps alive until we exec or
    // exit; every pointer in it is to memory the parent owns for that long. Each
    // call below is a system call on integers or on that memory.
    unsafe {
        let ctx = &*(arg as *const Ctx);
        // First, before anything that could block: should agentsup die while this
        // child is still here, the kernel kills it.
        if ctx.pdeathsig {
            arm_pdeathsig(ctx);
        }
        // Handlers live in the parent's memory: a signal arriving before exec must
        // not run one here. Reset every caught signal to its default (as glibc's
        // posix_spawn does, up to and including SIGRTMAX); ignored ones in `reset`
        // too.
        let mut sa: libc::sigaction = std::mem::zeroed();
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(sig, ptr::null(), &mut sa) == 0
                && sa.sa_sigaction != libc::SIG_DFL
                && sa.sa_sigaction != libc::SIG_IGN
            {
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &sa, ptr::null_mut());
            }
        }
        for i in 0..ctx.reset_len {
            libc::signal(*ctx.reset.add(i), libc::SIG_DFL);
        }
        // The Rust runtime ignores SIGPIPE in agentsup; children get the default
        // back, or `yes | head -1` in a worker complains instead of ending quietly.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Last: what the caller wants ignored stays ignored across execve (its
        // handler in agentsup was reset above).
        for i in 0..ctx.ignore_len {
            libc::signal(*ctx.ignore.add(i), libc::SIG_IGN);
        }
        if ctx.own_group {
            if libc::setpgid(0, 0) == -1 {
                fail(ctx, errno());
            }
            if ctx.take_terminal {
                // SIGTTOU is blocked (everything is), so a background group may
                // take the terminal. Failure is not fatal: signals are forwarded.
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            }
        }
        for (target, &fd) in ctx.stdio.iter().enumerate() {
            let target = target as libc::c_int;
            if fd == target {
                // dup2 onto itself is a no-op that keeps close-on-exec (possible
                // only when a library user closed its own stdio first).
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    fail(ctx, errno());
                }
            } else if fd >= 0 && libc::dup2(fd, target) == -1 {
                fail(ctx, errno());
            }
        }
        // Descriptors 0, 1, 2 and nothing else (the error pipe closes at exec).
        super::fd::close_from_except(3, ctx.report);
        if let Some(core) = &ctx.core {
            super::seal::restore_core_limit(core);
        }
        if let Some((uid, gid, groups, n)) = ctx.creds {
            let groups = std::slice::from_raw_parts(groups, n);
            if let Err(e) = super::creds::switch_to(uid, gid, groups) {
                fail(ctx, e);
            }
            // A credential change sets the memory's dumpable flag to
            // `fs.suid_dumpable`, and this child shares agentsup's memory until
            // execve: with suid_dumpable = 1 that would unseal agentsup for the
            // worker's uid. Re-seal; execve makes the worker dumpable again.
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            if ctx.pdeathsig {
                arm_pdeathsig(ctx);
            }
        }
        if libc::chdir(ctx.cwd) == -1 {
            fail(ctx, errno());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        libc::execve(ctx.program, ctx.argv, ctx.envp);
        fail(ctx, errno())
    }
}
