//! The dispatcher's timers of issue 14: `command` source refresh (the schedule is
//! [`crate::refresh`]: a timer for the earliest due source, a re-read when it
//! fires, the outcome fed back), and systemd's notifications ([`crate::notify`]).

use std::time::Instant;

use crate::replica::StateKind;

use super::{Dispatcher, Event, Input};

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

    /// A refresh timer fired: the fleet re-reads every source (paced like every
    /// re-read) and lets changed values roll out as a watched change's do.
    pub(super) fn on_refresh_due(&mut self, generation: u64) {
        if generation != self.refresh_gen || self.fleet.is_shutting_down() {
            return;
        }
        let sources = self.refresh.take_due(Instant::now());
        self.step(Event::Refresh { sources });
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
        if self.systemd.is_none() || self.fleet.is_shutting_down() {
            return;
        }
        let f = &self.fleet;
        let started = (0..f.len())
            .filter(|&s| {
                // A running replica with a `ready` probe has started once it passed.
                let running = f.state(s) == StateKind::Running;
                f.run(s) > 0
                    && f.state(s) != StateKind::Starting
                    && !(running && f.ready(s) == Some(false))
            })
            .count();
        let running = (0..f.len())
            .filter(|&s| f.state(s) == StateKind::Running)
            .count();
        let total = f.len();
        if let Some(n) = self.systemd.as_mut() {
            n.progress(started, running, total);
        }
    }
}
