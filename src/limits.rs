//! Naming the exhausted resource (SPEC: exhaustion is a message, not a crash).
//!
//! When a system call fails because a limit was reached, the raw `strerror` text
//! ("Too many open files", "Resource temporarily unavailable") does not tell an
//! operator which knob to turn. [`explain`] and [`explain_spawn`] add the
//! resource after the error, its current limit where one can be read, and where
//! to raise it: the one way messages show it.

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
/// `spawning`: it came from `fork`/`clone`, the one place where `EAGAIN` means
/// out of processes; most other calls return it for "not now" (a non-blocking
/// descriptor).
fn hint(e: &io::Error, spawning: bool) -> Option<String> {
    let text = match e.raw_os_error()? {
        libc::EMFILE => format!(
            "agentsup is out of file descriptors: its limit (`ulimit -n`) is {}; raise it (`ulimit -n`, systemd LimitNOFILE=, `docker run --ulimit nofile=`)",
            soft_limit(Resource::RLIMIT_NOFILE).map_or_else(|| "unknown".into(), |n| n.to_string())
        ),
        libc::ENFILE => format!(
            "the system is out of file descriptors: raise /proc/sys/fs/file-max{}",
            read_proc("/proc/sys/fs/file-max")
        ),
        libc::EAGAIN if spawning => format!(
            "out of processes: the user's process limit (`ulimit -u`, {}), /proc/sys/kernel/pid_max, /proc/sys/kernel/threads-max or the container's pids limit (pids.max) was reached",
            soft_limit(Resource::RLIMIT_NPROC)
                .map_or_else(|| "unlimited".into(), |n| n.to_string())
        ),
        libc::ENOMEM => "out of memory (or of address space: `ulimit -v`)".to_string(),
        _ => return None,
    };
    Some(text)
}

/// `e`'s text, followed by the exhausted resource and its limit in parentheses
/// when that is why it failed.
pub(crate) fn explain(e: &io::Error) -> String {
    glue(e, hint(e, false))
}

/// The text of an error from starting a process, with the resource it ran out
/// of (from the first OS error in its chain of sources) in parentheses.
pub(crate) fn explain_spawn(err: &(dyn Error + 'static)) -> String {
    let mut cur = Some(err);
    let mut found = None;
    while let Some(e) = cur {
        found = e.downcast_ref::<io::Error>().and_then(|io| hint(io, true));
        if found.is_some() {
            break;
        }
        cur = e.source();
    }
    glue(err, found)
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
        let h = hint(&io::Error::from_raw_os_error(libc::EMFILE), false).unwrap();
        assert!(h.contains("ulimit -n"), "{h}");
        let h = hint(&io::Error::from_raw_os_error(libc::ENFILE), false).unwrap();
        assert!(h.contains("/proc/sys/fs/file-max"), "{h}");
        let eagain = io::Error::from_raw_os_error(libc::EAGAIN);
        assert!(
            hint(&eagain, false).is_none(),
            "EAGAIN is \"not now\" outside fork"
        );
        let h = hint(&eagain, true).unwrap();
        assert!(h.contains("ulimit -u") && h.contains("pids.max"), "{h}");
        assert_eq!(explain(&eagain), eagain.to_string());
        assert!(hint(&io::Error::from_raw_os_error(libc::ENOENT), true).is_none());
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] io::Error);
        let w = Wrapped(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(explain_spawn(&w).contains("file descriptors"));
        let w = Wrapped(io::Error::from_raw_os_error(libc::EAGAIN));
        let text = explain_spawn(&w);
        assert!(text.starts_with("wrapped (out of processes"), "{text}");
        let w = Wrapped(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(explain_spawn(&w), "wrapped");
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(
            explain(&emfile).ends_with("nofile=`))"),
            "{}",
            explain(&emfile)
        );
    }
}
