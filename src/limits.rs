//! Naming the exhausted resource (SPEC: exhaustion is a message, not a crash).
//!
//! When a system call fails because a limit was reached, the raw `strerror` text
//! ("Too many open files", "Resource temporarily unavailable") does not tell an
//! operator which knob to turn. [`hint`] turns the errno into the resource, its
//! current limit where one can be read, and where to raise it; [`explain`] and
//! [`explain_spawn`] put it after the error, the one way messages show it.

use std::error::Error;
use std::io;

use nix::sys::resource::{Resource, getrlimit};

/// `ulimit`'s soft limit for `resource`, if readable and finite.
fn soft_limit(resource: Resource) -> Option<u64> {
    getrlimit(resource)
        .ok()
        .map(|(soft, _hard)| soft)
        .filter(|&soft| soft != libc::RLIM_INFINITY)
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| format!(" (now {})", s.trim()))
        .unwrap_or_default()
}

/// What the OS error `e` means in resources, if it is an exhaustion error.
/// `EAGAIN` is not one here: most calls return it for "not now" (a non-blocking
/// descriptor); only from `fork`/`clone` does it mean out of processes
/// ([`spawn_hint`]).
pub(crate) fn hint(e: &io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EAGAIN => None,
        _ => spawn_hint(e),
    }
}

/// [`hint`] for an error from starting a process, where `EAGAIN` means the
/// process limit was reached.
pub(crate) fn spawn_hint(e: &io::Error) -> Option<String> {
    let text = match e.raw_os_error()? {
        libc::EMFILE => format!(
            "agentsup is out of file descriptors: its limit (`ulimit -n`) is {}; raise it (`ulimit -n`, systemd LimitNOFILE=, `docker run --ulimit nofile=`)",
            soft_limit(Resource::RLIMIT_NOFILE).map_or_else(|| "unknown".into(), |n| n.to_string())
        ),
        libc::ENFILE => format!(
            "the system is out of file descriptors: raise /proc/sys/fs/file-max{}",
            read_proc("/proc/sys/fs/file-max")
        ),
        libc::EAGAIN => format!(
            "out of processes: the user's process limit (`ulimit -u`, {}), /proc/sys/kernel/pid_max, /proc/sys/kernel/threads-max or the container's pids limit (pids.max) was reached",
            soft_limit(Resource::RLIMIT_NPROC)
                .map_or_else(|| "unlimited".into(), |n| n.to_string())
        ),
        libc::ENOMEM => "out of memory (or of address space: `ulimit -v`)".to_string(),
        _ => return None,
    };
    Some(text)
}

/// [`spawn_hint`] for the first OS error in `err`'s chain of sources.
pub(crate) fn spawn_hint_in(err: &(dyn Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(h) = spawn_hint(io)
        {
            return Some(h);
        }
        cur = e.source();
    }
    None
}

/// `e`'s text, followed by the exhausted resource and its limit in parentheses
/// when that is why it failed.
pub(crate) fn explain(e: &io::Error) -> String {
    glue(e, hint(e))
}

/// The text of an error from starting a process, with the resource it ran out
/// of ([`spawn_hint_in`]) in parentheses.
pub(crate) fn explain_spawn(err: &(dyn Error + 'static)) -> String {
    glue(err, spawn_hint_in(err))
}

fn glue(e: &dyn std::fmt::Display, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{e} ({h})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_errors_name_the_limit() {
        let h = hint(&io::Error::from_raw_os_error(libc::EMFILE)).unwrap();
        assert!(h.contains("ulimit -n"), "{h}");
        let h = hint(&io::Error::from_raw_os_error(libc::ENFILE)).unwrap();
        assert!(h.contains("/proc/sys/fs/file-max"), "{h}");
        let eagain = io::Error::from_raw_os_error(libc::EAGAIN);
        assert!(
            hint(&eagain).is_none(),
            "EAGAIN is \"not now\" outside fork"
        );
        let h = spawn_hint(&eagain).unwrap();
        assert!(h.contains("ulimit -u") && h.contains("pids.max"), "{h}");
        assert_eq!(explain(&eagain), eagain.to_string());
        assert!(hint(&io::Error::from_raw_os_error(libc::ENOENT)).is_none());
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] io::Error);
        let w = Wrapped(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(spawn_hint_in(&w).unwrap().contains("file descriptors"));
        let w = Wrapped(io::Error::from_raw_os_error(libc::EAGAIN));
        let text = explain_spawn(&w);
        assert!(text.starts_with("wrapped (out of processes"), "{text}");
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(
            explain(&emfile).ends_with("nofile=`))"),
            "{}",
            explain(&emfile)
        );
    }
}
