//! Naming the exhausted resource (SPEC: exhaustion is a message, not a crash).
//!
//! When a system call fails because a limit was reached, the raw `strerror` text
//! ("Too many open files", "Resource temporarily unavailable") does not tell an
//! operator which knob to turn. [`hint`] turns the errno into the resource, its
//! current limit where one can be read, and where to raise it.

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
pub fn hint(e: &io::Error) -> Option<String> {
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

/// [`hint`] for the first OS error in `err`'s chain of sources.
pub fn hint_in(err: &(dyn Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(h) = hint(io) {
                return Some(h);
            }
        }
        cur = e.source();
    }
    None
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
        let h = hint(&io::Error::from_raw_os_error(libc::EAGAIN)).unwrap();
        assert!(h.contains("ulimit -u") && h.contains("pids.max"), "{h}");
        assert!(hint(&io::Error::from_raw_os_error(libc::ENOENT)).is_none());
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] io::Error);
        let w = Wrapped(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(hint_in(&w).unwrap().contains("file descriptors"));
    }
}
