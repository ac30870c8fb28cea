//! The dispatcher's side of `command` source refresh (issue 14; the schedule is
//! [`crate::refresh`]): a timer for the earliest due source, a re-read when it
//! fires, and the outcome fed back to the schedule.

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
