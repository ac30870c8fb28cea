//! Reading `/proc/PID/stat` (Linux; see proc(5)). Hand-written: two numeric
//! fields are all agentsup needs, not worth a procfs crate.

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
}
