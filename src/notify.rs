//! systemd's notification protocol for agentsup itself (issue 14): under a unit
//! with `Type=notify`, `agentsup run` sends `READY=1` once every replica has
//! started (or finished its first run), a `STATUS=` line as that changes,
//! `STOPPING=1` when a shutdown begins, and, when the unit sets `WatchdogSec=`,
//! `WATCHDOG=1` at half the interval from the dispatcher's own loop, so a stuck
//! dispatcher stops the pings and systemd restarts the service.
//!
//! The datagrams go to `$NOTIFY_SOCKET` through the `sd-notify` crate. agentsup
//! never changes its own environment (so the variable is not unset); workers do not
//! get `NOTIFY_SOCKET` unless `[env] inherit` names it, and systemd's default
//! `NotifyAccess=main` ignores any process but agentsup anyway.

use std::time::Duration;

use sd_notify::NotifyState;

/// The notifier of one `run`; `None` outside systemd (no `NOTIFY_SOCKET`).
#[derive(Debug)]
pub(crate) struct Systemd {
    /// The last send failed (warned once until one succeeds again).
    failing: bool,
    ready_sent: bool,
    last_status: String,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// A notifier when `$NOTIFY_SOCKET` is set.
    pub(crate) fn from_env() -> Option<Systemd> {
        std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
        Some(Systemd {
            failing: false,
            ready_sent: false,
            last_status: String::new(),
            watchdog: sd_notify::watchdog_enabled(),
        })
    }

    /// How often to ping the watchdog (half of `WatchdogSec=`, as sd_watchdog_enabled
    /// advises), when the unit asked for it.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(10)))
    }

    /// Reports progress: `started` replicas out of `total` have finished starting,
    /// `running` of them run. Sends `READY=1` the first time every one has, and a
    /// `STATUS=` line whenever the text changes.
    pub(crate) fn progress(&mut self, started: usize, running: usize, total: usize) {
        let status = format!("{running} of {total} replicas running");
        let mut states = Vec::new();
        if !self.ready_sent && started >= total {
            self.ready_sent = true;
            states.push(NotifyState::Ready);
        }
        if status != self.last_status {
            states.push(NotifyState::Status(&status));
        }
        if states.is_empty() {
            return;
        }
        self.send(&states);
        self.last_status = status;
    }

    /// A shutdown began.
    pub(crate) fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// One watchdog ping.
    pub(crate) fn ping(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        // A manager that went away does not stop the workers: one warning until a
        // send works again, not one per watchdog ping.
        match sd_notify::notify(states) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!("could not notify systemd through $NOTIFY_SOCKET: {e}");
                }
            }
        }
    }
}
