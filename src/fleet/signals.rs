//! The fleet's answers to signals (see `crate::signals` for how they are read):
//! stop (a second stop signal kills at once), reload, and the signals of processes
//! agentsup started, which are not commands (issue 12).

use std::collections::HashSet;
use std::time::Duration;

use super::{Action, Cx, Fleet, Timer};
use crate::signals::SignalEvent;

/// How many senders of ignored signals are remembered (each warned about once).
const MAX_WARNED: usize = 1024;

/// How long an ignored signal from an unknown process waits for its sender to be
/// known (a worker may signal before its `Spawned` report arrives).
const PLACE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct SignalState {
    /// Stop signals so far.
    shutdown_signals: u32,
    /// Processes whose ignored signals were logged (bounded).
    warned: HashSet<u32>,
    /// Ignored signals whose sender's worker is not known yet: `(sig, sender, below)`.
    unplaced: Vec<(i32, u32, u32)>,
}

impl Fleet {
    pub(super) fn on_signal(&mut self, ev: SignalEvent, cx: &mut Cx<'_>) {
        match ev {
            SignalEvent::Shutdown(sig) => {
                self.signals.shutdown_signals += 1;
                if self.signals.shutdown_signals == 1 {
                    cx.info(format!(
                        "received {}: stopping every worker (a second signal kills at once)",
                        signal_name(sig)
                    ));
                    self.begin_shutdown(cx);
                } else {
                    cx.warn(format!(
                        "received {} (a second stop signal): killing every worker now",
                        signal_name(sig)
                    ));
                    self.kill_all(cx);
                }
            }
            SignalEvent::Reload => {
                cx.info("received SIGHUP: re-reading and re-checking every source");
                self.reread.reload_requested = true;
                self.start_reread(cx);
            }
            SignalEvent::Ignored { sig, sender, below } => {
                self.ignored_signal(sig, sender, below, cx);
            }
        }
    }

    /// A signal from a process running under agentsup: not a command. One warning
    /// per worker (or source command) it came from, naming it. A worker may signal
    /// before its `Spawned` event arrives: the warning then waits for that event,
    /// or for [`PLACE_WAIT`] (a source command never gets one).
    fn ignored_signal(&mut self, sig: i32, sender: u32, below: u32, cx: &mut Cx<'_>) {
        let st = &mut self.signals;
        if st.warned.len() >= MAX_WARNED || !st.warned.insert(below) {
            return;
        }
        if self.slots.iter().any(|s| s.pid == Some(below)) {
            self.warn_ignored(sig, sender, below, cx);
            return;
        }
        if self.signals.unplaced.is_empty() {
            cx.out.push(Action::ArmTimer {
                at: cx.now + PLACE_WAIT,
                timer: Timer::UnplacedSignals,
            });
        }
        self.signals.unplaced.push((sig, sender, below));
    }

    /// Warns about the ignored signals from `pid` (a replica that just started),
    /// or about all that wait when `pid` is `None` (their wait is over).
    pub(super) fn place_signals(&mut self, pid: Option<u32>, cx: &mut Cx<'_>) {
        if self.signals.unplaced.is_empty() {
            return;
        }
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.signals.unplaced)
            .into_iter()
            .partition(|&(_, _, below)| pid.is_none_or(|p| p == below));
        self.signals.unplaced = later;
        for (sig, sender, below) in now {
            self.warn_ignored(sig, sender, below, cx);
        }
    }

    fn warn_ignored(&self, sig: i32, sender: u32, below: u32, cx: &mut Cx<'_>) {
        let who = self
            .slots
            .iter()
            .find(|s| s.pid == Some(below))
            .map(|s| format!("worker {}, pid {below}", s.label))
            .unwrap_or_else(|| format!("a process agentsup started, pid {below}"));
        cx.warn(format!(
            "ignored {} from pid {sender} ({who}): signals from processes agentsup started are not commands; further ones from it are ignored silently",
            signal_name(sig)
        ));
    }
}

/// `SIGTERM`, or `signal N` for a number nix does not name.
pub(crate) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
