//! Signalling a worker's process or group by number (real-time signals too).

use std::io;

use crate::reaper;
use crate::sys::signal;

/// Sends `sig` to every process in group `pgid`. A group that no longer exists is
/// not an error (it may have just exited). `pgid` 0 is refused: `killpg(0)` would
/// signal agentsup's own group.
pub fn kill_group(pgid: u32, sig: i32) -> io::Result<()> {
    ok_unless_gone(signal::killpg(reaper::to_pid(pgid)?, sig))
}

/// Sends `sig` to one process. A process that no longer exists is not an error.
/// `pid` 0 is refused (it means "my group"), as are values that would be negative.
pub(crate) fn kill_pid(pid: u32, sig: i32) -> io::Result<()> {
    ok_unless_gone(signal::kill(reaper::to_pid(pid)?, sig))
}

fn ok_unless_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}
