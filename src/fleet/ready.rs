//! Per-worker readiness, the fleet's side: a run with a `ready` probe is not
//! ready from its spawn until the probe passes ([`super::Event::Ready`]); a
//! rolling restart waits for that, or for the probe's timeout
//! ([`super::Timer::ReadyTimeout`]), before it moves to the next replica. The
//! probes themselves run in the dispatcher (`supervisor/ready_ops.rs`).

use super::{Cx, Fleet, SlotId, round_ms};

impl Fleet {
    /// The probe of `slot`'s run `run` passed.
    pub(super) fn on_ready(&mut self, slot: SlotId, run: u64, cx: &mut Cx<'_>) {
        let s = &mut self.slots[slot];
        if s.run != run || s.ready != Some(false) {
            return;
        }
        s.ready = Some(true);
        let took = s
            .running_since
            .map(|t| {
                let d = cx.now.saturating_duration_since(t);
                format!(
                    " {} after it started",
                    humantime::format_duration(round_ms(d))
                )
            })
            .unwrap_or_default();
        let what = self.cfg.workers[s.worker]
            .ready
            .as_ref()
            .map(|r| r.1.clone())
            .unwrap_or_default();
        cx.info(format!("{}: ready{took} ({what})", s.label));
        self.rolling_up(slot, cx);
    }

    /// `slot`'s run `run` did not pass its probe within its timeout: whether it
    /// runs, crashed or backs off, a rolling restart never waits longer for it.
    pub(super) fn on_ready_timeout(&mut self, slot: SlotId, run: u64, cx: &mut Cx<'_>) {
        let s = &self.slots[slot];
        if s.run != run || s.ready != Some(false) {
            return;
        }
        let Some((timeout, what)) = self.cfg.workers[s.worker].ready.as_ref() else {
            return;
        };
        let current = self.rolling.is_current(slot);
        cx.warn(format!(
            "{}: not ready {} after it started ({what}); it counts as not ready until the probe passes{}",
            s.label,
            humantime::format_duration(*timeout),
            if current {
                "; the rolling restart moves on without it"
            } else {
                ""
            }
        ));
        if current {
            self.rolling_done(slot, cx);
        }
    }
}
