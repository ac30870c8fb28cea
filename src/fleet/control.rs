//! Answers to the control socket: `status`, `restart NAME[.N]` and `reload`.

use super::{Action, Cx, Fleet, ReplyId, SlotId};
use crate::replica::{self, StateKind};
use crate::status::{ControlRequest, ControlResponse, RestartReason};

impl Fleet {
    pub(super) fn on_control(&mut self, to: ReplyId, req: ControlRequest, cx: &mut Cx<'_>) {
        match req {
            ControlRequest::Status => {
                let status = self.status(cx.now);
                reply(cx, to, true, String::new(), Some(status));
            }
            ControlRequest::Restart { target } => self.on_restart(to, &target, cx),
            ControlRequest::Reload => {
                cx.info(
                    "reload requested over the control socket: re-reading and re-checking every source",
                );
                self.reread.reload_requested = true;
                self.reread.reload_replies.push(to);
                self.start_reread(cx);
            }
        }
    }

    /// The replicas `NAME` or `NAME.N` names.
    fn targets(&self, target: &str) -> (String, Vec<SlotId>) {
        let (name, index) = match target.rsplit_once('.') {
            Some((n, i)) if i.parse::<u32>().is_ok() => (n.to_string(), i.parse::<u32>().ok()),
            _ => (target.to_string(), None),
        };
        let slots = (0..self.slots.len())
            .filter(|&i| {
                self.cfg.workers[self.slots[i].worker].name == name
                    && index.is_none_or(|n| self.slots[i].replica == n)
            })
            .collect();
        (name, slots)
    }

    fn on_restart(&mut self, to: ReplyId, target: &str, cx: &mut Cx<'_>) {
        let (name, slots) = self.targets(target);
        if slots.is_empty() {
            let names: Vec<&str> = self.cfg.workers.iter().map(|w| w.name.as_str()).collect();
            let hint = match crate::config::nearest(&name, &names) {
                Some(n) if n != name => format!("; did you mean {n:?}?"),
                _ => String::new(),
            };
            let message = format!(
                "no replica {target:?}; workers: {} (use NAME or NAME.N){hint}",
                names.join(", ")
            );
            reply(cx, to, false, message, None);
            return;
        }
        if self.shutting_down {
            reply(cx, to, false, "agentsup is shutting down".into(), None);
            return;
        }
        let labels: Vec<String> = slots.iter().map(|&i| self.slots[i].label.clone()).collect();
        cx.info(format!(
            "restart requested over the control socket: {}",
            labels.join(", ")
        ));
        for &slot in &slots {
            self.slots[slot].restart_reason = RestartReason::Manual;
        }
        // Idle replicas (backoff, auth-blocked, failed, exited) start now; running
        // ones restart one at a time.
        let mut running = Vec::new();
        for slot in slots {
            let at = cx.now;
            match self.state(slot) {
                StateKind::Running => running.push(slot),
                StateKind::Failed | StateKind::Exited | StateKind::Stopped => {
                    self.drive(slot, replica::Event::Start, cx);
                }
                _ => self.drive(slot, replica::Event::RestartRequested { at }, cx),
            }
        }
        self.queue_rolling(running, RestartReason::Manual, cx);
        let message = format!("restarting {} (one at a time)", labels.join(", "));
        reply(cx, to, true, message, None);
    }
}

fn reply(
    cx: &mut Cx<'_>,
    to: ReplyId,
    ok: bool,
    message: String,
    status: Option<crate::status::Status>,
) {
    cx.out.push(Action::Reply {
        to,
        response: ControlResponse {
            ok,
            message,
            status,
        },
    });
}
