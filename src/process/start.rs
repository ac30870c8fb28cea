//! One start through the child routine: everything the child reads, built
//! before the `clone` and wiped after.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use super::path::check_and_resolve;
use super::{ChildSetup, SpawnError, SpawnSpec};
use crate::reaper::{ExitWaiter, ReaperHandle};
use crate::sys::child::{self, CArray};

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
pub(super) fn start<T>(
    spec: &SpawnSpec,
    setup: ChildSetup<'_>,
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
        ignore: setup.ignore,
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
pub(super) fn registered(
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
pub(crate) fn spawn_direct(spec: &SpawnSpec, setup: ChildSetup<'_>) -> Result<Started, SpawnError> {
    start(spec, setup, unregistered).map(|(started, ())| started)
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
