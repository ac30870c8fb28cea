//! The dispatcher's timers of issue 14: `command` source refresh (the schedule is
//! [`crate::refresh`]: a timer for the earliest due source, a re-read when it
//! fires, the outcome fed back), and systemd's notifications ([`crate::notify`]).

use std::time::Instant;

use super::{Dispatcher, Input};

impl Dispatcher {
    /// (Re)arms the one refresh timer for the earliest due source; an older timer
    /// is ignored when it fires (generation).
    pub(super) fn arm_refresh(&mut self) {
        self.refresh_gen += 1;
        let Some(at) = self.refresh.next_due() else {
            return;
        };
        let generation = self.refresh_gen;
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = tx.send(Input::RefreshDue { generation });
        });
    }

    /// A refresh timer fired: re-read every source (paced like every re-read), and
    /// let changed values roll out as a watched change's do.
    pub(super) fn on_refresh_due(&mut self, generation: u64) {
        if generation != self.refresh_gen || self.shutting_down {
            return;
        }
        let due = self.refresh.take_due(Instant::now());
        if !due.is_empty() {
            tracing::info!(
                "refreshing {}: re-reading and re-checking every source",
                due.join(", ")
            );
            self.watch_triggered = true;
            self.start_reread();
        }
        self.arm_refresh();
    }

    /// Feeds a re-read's outcome to the refresh schedule.
    pub(super) fn refresh_outcome(&mut self, accepted: bool, why: Option<&str>) {
        if self.refresh.is_empty() {
            return;
        }
        let now = Instant::now();
        if accepted {
            let snapshot = self.snapshot.clone();
            self.refresh.succeeded(&snapshot, now, true);
        } else {
            for f in self.refresh.failed(now) {
                tracing::warn!(
                    "refresh of {} failed ({} in a row); keeping the old values, trying again in {}: {}",
                    f.what,
                    f.failures,
                    humantime::format_duration(f.retry_in),
                    why.unwrap_or("the re-read failed")
                );
            }
        }
        self.arm_refresh();
    }
}

impl Dispatcher {
    /// Under systemd with `WatchdogSec=`: a ping input every half interval. It goes
    /// through the dispatcher's queue, so the pings stop if the dispatcher hangs.
    pub(super) fn start_watchdog(&self) {
        let Some(every) = self.systemd.as_ref().and_then(|n| n.watchdog_every()) else {
            return;
        };
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.send(Input::Watchdog).is_err() {
                    break;
                }
            }
        });
    }

    /// `READY=1` once every replica has started (or ended its first run), and
    /// a status line of how many run.
    pub(super) fn notify_systemd(&mut self) {
        if self.systemd.is_none() || self.shutting_down {
            return;
        }
        let started = self
            .slots
            .iter()
            .filter(|s| {
                // A running replica with a `ready` probe has started once it passed.
                let running = matches!(s.machine.state(), crate::replica::State::Running { .. });
                s.run > 0
                    && !matches!(s.machine.state(), crate::replica::State::Starting)
                    && !(running && s.ready == Some(false))
            })
            .count();
        let running = self
            .slots
            .iter()
            .filter(|s| matches!(s.machine.state(), crate::replica::State::Running { .. }))
            .count();
        let total = self.slots.len();
        if let Some(n) = self.systemd.as_mut() {
            n.progress(started, running, total);
        }
    }
}
