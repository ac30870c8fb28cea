//! Reading `/proc/PID/stat` (Linux; see proc(5)). Hand-written: two numeric
//! fields and a walk up the parent chain are all agentsup needs, not worth a procfs
//! crate.

/// Field `n` of `/proc/{pid}/stat`, numbered as proc(5) numbers them (4 is the
/// parent's pid, 20 the number of threads); `pid` may be `"self"`. `None` if the
/// process is gone or the field is not a number. The fields are counted after the
/// `(comm)` part, which may itself hold spaces and parentheses.
pub fn stat_field(pid: &str, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // What follows the last ')' starts at field 3 (state).
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// The parent of `pid`, `None` if it is gone (0 for a process whose parent is
/// outside our pid namespace, and for PID 1).
pub fn parent(pid: u32) -> Option<u32> {
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
pub fn descends_from(pid: u32, ancestor: u32) -> Option<u32> {
    let mut current = pid;
    for _ in 0..MAX_DEPTH {
        if current == ancestor || current == 0 {
            return None;
        }
        let up = parent(current)?;
        if up == ancestor {
            return Some(current);
        }
        if up == current {
            return None;
        }
        current = up;
    }
    None
}

/// The pids of `pid`'s children, from every `/proc/*/stat` (the kernel's
/// `children` file needs CONFIG_PROC_CHILDREN and lists one thread only).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_parent_and_thread_count() {
        let ppid = stat_field("self", 4).unwrap();
        assert_eq!(ppid, std::os::unix::process::parent_id() as u64);
        assert!(stat_field("self", 20).unwrap() >= 1);
        assert_eq!(stat_field("self", 2), None, "comm is not a number field");
        assert_eq!(stat_field("0", 4), None, "no such process");
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
