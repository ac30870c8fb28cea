//! A stop signal before the dispatcher runs (SPEC 5, issue 13): while the sources
//! load, the run waits on a blocking task that may be running a `command` source
//! for as long as its `timeout`. A SIGTERM then must not wait for that timeout (and
//! fail the load, exit 78): the commands' process groups are killed and the run
//! exits 0, within `shutdown_timeout`, having started nothing.

use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinHandle};

use crate::exit::code;
use crate::signals::SignalStream;

/// Awaits `task`, unless a stop signal comes first: then the process groups of
/// agentsup's children (the source commands running; never the guard) are killed
/// until the task ends or 90 % of `shutdown_timeout` passes, and the exit code
/// comes back as `Err`. `what` names the phase in the log (`loading the sources`).
/// Other signals that arrive meanwhile are kept for the dispatcher.
pub(super) async fn during<T>(
    mut task: JoinHandle<T>,
    signals: &mut SignalStream,
    shutdown_timeout: Duration,
    what: &str,
) -> Result<Result<T, JoinError>, u8> {
    let sig = tokio::select! {
        r = &mut task => return Ok(r),
        sig = signals.next_stop() => sig,
    };
    tracing::info!(
        "received {} while {what}, before any worker started: stopping the source commands still running and exiting without starting anything",
        super::signal_name(sig)
    );
    let deadline = Instant::now() + crate::plan::kill_after(shutdown_timeout);
    // Repeated: a source that was killed lets the loader start the next one.
    loop {
        kill_children();
        if task.is_finished() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !task.is_finished() {
        tracing::warn!(
            "a source command did not end within shutdown_timeout ({}); exiting anyway",
            humantime::format_duration(shutdown_timeout)
        );
    }
    crate::guard::finish();
    Err(code::OK)
}

/// SIGKILLs the process group of every child of agentsup but the guard. Each
/// source command leads its own group (spawn's `own_group`), so this takes what
/// it started along.
fn kill_children() {
    for pid in crate::procfs::children(std::process::id()) {
        if !crate::guard::is_guard(pid) {
            let _ = crate::process::kill_group(pid, libc::SIGKILL);
            let _ = crate::process::kill_pid(pid, libc::SIGKILL);
        }
    }
}
