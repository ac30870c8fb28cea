//! The one-at-a-time restart queue (SIGHUP, `agentsup reload`, a rotation,
//! `agentsup restart NAME`): the next replica is asked to restart once the one
//! before it runs again, so a worker is never all down.
//!
//! One restart per rotation per replica (issue 14): each entry remembers the run
//! it was queued for. A replica started again meanwhile — an auth failure on the
//! old key restarted it on the new one, or it crashed and came back — already runs
//! on the values the restart was for, and is skipped instead of being stopped a
//! second time.

use super::{Cx, Fleet, SlotId};
use crate::replica;
use crate::status::RestartReason;

/// One queued restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    slot: SlotId,
    /// The slot's run when it was queued.
    run: u64,
    reason: RestartReason,
}

/// The queue.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// Waiting, the next at the end.
    waiting: Vec<Entry>,
    /// The replica restarting now.
    current: Option<SlotId>,
}

impl Queue {
    /// Forgets what waits (shutdown).
    pub(super) fn clear(&mut self) {
        self.waiting.clear();
    }

    /// True when `slot` is the replica restarting now.
    pub(super) fn is_current(&self, slot: SlotId) -> bool {
        self.current == Some(slot)
    }
}

impl Fleet {
    /// Adds replicas to the one-at-a-time restart queue, in order.
    pub(super) fn queue_rolling(
        &mut self,
        list: Vec<SlotId>,
        reason: RestartReason,
        cx: &mut Cx<'_>,
    ) {
        for slot in list {
            let q = &mut self.rolling;
            if !q.waiting.iter().any(|e| e.slot == slot) && q.current != Some(slot) {
                q.waiting.insert(
                    0,
                    Entry {
                        slot,
                        run: self.slots[slot].run,
                        reason,
                    },
                );
            }
        }
        self.next_rolling(cx);
    }

    /// `slot` is up again (running, and ready if it has a probe): the queue moves
    /// on if it was the one restarting.
    pub(super) fn rolling_up(&mut self, slot: SlotId, cx: &mut Cx<'_>) {
        if self.state(slot) == crate::replica::StateKind::Running {
            self.rolling_done(slot, cx);
        }
    }

    /// `slot` is done, up or not (it could not start, or its `ready` timeout
    /// passed): the queue moves on if it was the one restarting.
    pub(super) fn rolling_done(&mut self, slot: SlotId, cx: &mut Cx<'_>) {
        if self.rolling.current == Some(slot) {
            self.rolling.current = None;
            self.next_rolling(cx);
        }
    }

    fn next_rolling(&mut self, cx: &mut Cx<'_>) {
        if self.shutting_down || self.rolling.current.is_some() {
            return;
        }
        while let Some(e) = self.rolling.waiting.pop() {
            if self.slots[e.slot].run != e.run {
                cx.info(format!(
                    "{}: already started again since the {} restart was planned; not restarting it twice",
                    self.slots[e.slot].label, e.reason
                ));
                continue;
            }
            self.rolling.current = Some(e.slot);
            let at = cx.now;
            self.drive(e.slot, replica::Event::RestartRequested { at }, cx);
            return;
        }
    }
}
