//! The dispatcher's side of signals (see `crate::signals` for how they are read):
//! stop, reload, and the signals of processes agentsup started, which are not
//! commands (issue 12).

use super::{Dispatcher, Input};
use crate::signals::SignalEvent;

impl Dispatcher {
    pub(super) fn on_signal(&mut self, ev: SignalEvent) {
        match ev {
            SignalEvent::Shutdown(sig) => {
                self.shutdown_signals += 1;
                if self.shutdown_signals == 1 {
                    tracing::info!(
                        "received {}: stopping every worker (a second signal kills at once)",
                        signal_name(sig)
                    );
                    self.begin_shutdown();
                } else {
                    tracing::warn!(
                        "received {} (a second stop signal): killing every worker now",
                        signal_name(sig)
                    );
                    self.kill_all();
                }
            }
            SignalEvent::Reload => {
                tracing::info!("received SIGHUP: re-reading and re-checking every source");
                self.reload_requested = true;
                self.start_reread();
            }
            SignalEvent::Ignored { sig, sender, below } => self.ignored_signal(sig, sender, below),
        }
    }

    /// A signal from a process running under agentsup: not a command (issue 12).
    /// One warning per worker (or source command) it came from, naming it. A
    /// worker may signal before its `Spawned` event arrives: the warning then
    /// waits for that event, or for a second (a source command never gets one).
    fn ignored_signal(&mut self, sig: i32, sender: u32, below: u32) {
        const MAX_WARNED: usize = 1024;
        if self.signal_warned.len() >= MAX_WARNED || !self.signal_warned.insert(below) {
            return;
        }
        if self.slots.iter().any(|s| s.pid == Some(below)) {
            self.warn_ignored(sig, sender, below);
            return;
        }
        if self.unplaced_signals.is_empty() {
            let tx = self.inputs_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let _ = tx.send(Input::UnplacedSignals);
            });
        }
        self.unplaced_signals.push((sig, sender, below));
    }

    /// Warns about the ignored signals from `pid` (a replica that just started),
    /// or about all that wait when `pid` is `None` (their second is over).
    pub(super) fn place_signals(&mut self, pid: Option<u32>) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unplaced_signals)
            .into_iter()
            .partition(|&(_, _, below)| pid.is_none_or(|p| p == below));
        self.unplaced_signals = later;
        for (sig, sender, below) in now {
            self.warn_ignored(sig, sender, below);
        }
    }

    fn warn_ignored(&self, sig: i32, sender: u32, below: u32) {
        let who = self
            .slots
            .iter()
            .find(|s| s.pid == Some(below))
            .map(|s| format!("worker {}, pid {below}", s.label))
            .unwrap_or_else(|| format!("a process agentsup started, pid {below}"));
        tracing::warn!(
            "ignored {} from pid {sender} ({who}): signals from processes agentsup started are not commands; further ones from it are ignored silently",
            signal_name(sig)
        );
    }
}

/// `SIGTERM`, or `signal N` for a number nix does not name.
pub(super) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
