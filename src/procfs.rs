//! Reading `/proc/PID/stat` (Linux; see proc(5)). Hand-written: a few numeric
//! fields, a walk up the parent chain and a scan of every process (the final
//! sweep) are all agentsup needs, not worth a procfs crate.

/// What agentsup reads of one process's `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The process id.
    pub pid: u32,
    /// Field 4.
    pub ppid: u32,
    /// Field 5: the process group.
    pub pgrp: u32,
    /// Field 6.
    pub session: u32,
    /// Field 3 is `Z`: exited, not yet reaped.
    pub zombie: bool,
}

/// The fields of `/proc/{pid}/stat` after `(comm)`, which may itself hold spaces
/// and parentheses; the first is field 3 (state).
fn fields_after_comm(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace())
}

/// `pid`'s [`Stat`], `None` if it is gone.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = fields_after_comm(&text)?;
    let state = f.next()?;
    let mut num = || f.next()?.parse::<u32>().ok();
    Some(Stat {
        pid,
        ppid: num()?,
        pgrp: num()?,
        session: num()?,
        zombie: state == "Z",
    })
}

/// Every process's [`Stat`] (those that exit meanwhile are left out).
pub(crate) fn all() -> Vec<Stat> {
    pids().filter_map(stat).collect()
}

/// `pid`'s command name (`/proc/PID/comm`), empty if it is gone.
pub(crate) fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// The kernel's page size (`sysconf(_SC_PAGESIZE)`); 4096 if it cannot be read.
pub(crate) fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

/// The pids listed in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
}

/// Field `n` of `/proc/{pid}/stat`, numbered as proc(5) numbers them (4 is the
/// parent's pid, 20 the number of threads); `pid` may be `"self"`. `None` if the
/// process is gone or the field is not a number. The fields are counted after the
/// `(comm)` part, which may itself hold spaces and parentheses.
pub(crate) fn stat_field(pid: &str, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    fields_after_comm(&stat)?
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// The parent of `pid`, `None` if it is gone (0 for a process whose parent is
/// outside our pid namespace, and for PID 1).
pub(crate) fn parent(pid: u32) -> Option<u32> {
    stat_field(&pid.to_string(), 4).and_then(|p| u32::try_from(p).ok())
}

/// Longest parent chain walked: far beyond any real process tree, and a bound for
/// a chain that changes while it is read (pids are reused).
const MAX_DEPTH: usize = 4096;

/// Whether `pid` runs under `ancestor`: if so, the process of its parent chain
/// whose parent is `ancestor` (`pid` itself when `ancestor` is its parent), which
/// for agentsup names the worker (or source command) it descends from. `None` when
/// the chain ends (PID 1, a parent outside our pid namespace) without meeting
/// `ancestor`, when `pid` is `ancestor` itself, and when `pid` is gone: a process
/// that exited can no longer be placed.
pub(crate) fn descends_from(pid: u32, ancestor: u32) -> Option<u32> {
    ancestry(pid)
        .windows(2)
        .find(|pair| pair[1] == ancestor)
        .map(|pair| pair[0])
}

/// `pid` and its ancestors, nearest first, up to the top of our pid namespace;
/// empty if `pid` is gone. Read at once, for a process that may exit soon after.
pub(crate) fn ancestry(pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut current = pid;
    while current != 0 && chain.len() < MAX_DEPTH && !chain.contains(&current) {
        let Some(up) = parent(current) else { break };
        chain.push(current);
        current = up;
    }
    chain
}

/// The pids of `pid`'s children, from every `/proc/*/stat` (the kernel's
/// `children` file needs CONFIG_PROC_CHILDREN and lists one thread only).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    pids().filter(|&p| parent(p) == Some(pid)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_starts_with_the_process_and_passes_its_parent() {
        let me = std::process::id();
        let chain = ancestry(me);
        assert_eq!(chain.first(), Some(&me));
        if let Some(&up) = chain.get(1) {
            assert_eq!(up, std::os::unix::process::parent_id());
        }
        assert!(ancestry(0).is_empty());
        assert!(ancestry(u32::MAX).is_empty(), "no such process");
    }

    #[test]
    fn reads_our_own_parent_and_thread_count() {
        let ppid = stat_field("self", 4).unwrap();
        assert_eq!(ppid, std::os::unix::process::parent_id() as u64);
        assert!(stat_field("self", 20).unwrap() >= 1);
        assert_eq!(stat_field("self", 2), None, "comm is not a number field");
        assert_eq!(stat_field("0", 4), None, "no such process");
        let me = stat(std::process::id()).unwrap();
        assert_eq!(u64::from(me.ppid), ppid);
        assert!(!me.zombie);
        // Both are 0 when the group or session leader lives outside our pid
        // namespace (as under some CI runners), so compare with the kernel's own
        // answer rather than assume a positive number.
        let pgrp = nix::unistd::getpgrp().as_raw();
        let sid = nix::unistd::getsid(None).map_or(-1, |p| p.as_raw());
        assert_eq!(
            (i64::from(me.pgrp), i64::from(me.session)),
            (i64::from(pgrp), i64::from(sid))
        );
        assert!(all().contains(&me));
        assert!(stat(u32::MAX).is_none());
        assert!(!comm(std::process::id()).is_empty());
        let page = page_size();
        assert!(page.is_power_of_two() && page >= 4096, "{page}");
    }

    #[test]
    fn places_a_grandchild_under_us_and_a_stranger_not() {
        let me = std::process::id();
        // sh starts sleep as its child: our grandchild.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleep: u32 = line.trim().parse().unwrap();
        assert_eq!(descends_from(sleep, me), Some(sh.id()));
        assert_eq!(descends_from(sh.id(), me), Some(sh.id()));
        assert!(children(me).contains(&sh.id()));
        assert!(!children(me).contains(&sleep));
        // Our parent is not under us; neither are we, nor a pid that is not there.
        assert_eq!(descends_from(std::os::unix::process::parent_id(), me), None);
        assert_eq!(descends_from(me, me), None);
        assert_eq!(descends_from(u32::MAX, me), None);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleep as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        #[allow(clippy::disallowed_methods)] // the test waits on its own child
        sh.wait().unwrap();
    }
}
