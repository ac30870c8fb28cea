//! The dispatcher's answers to the control socket (`status`, `restart`, `reload`)
//! and the snapshots it publishes for the control socket and the health endpoints.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Dispatcher, Event};
use crate::status::{ControlRequest, ControlResponse, ReplicaStatus, RestartReason, Status};

impl Dispatcher {
    /// Publishes a fresh [`Status`]; cheap enough to do after every event.
    pub(super) fn publish(&self) {
        let now = Instant::now();
        let status = Status {
            config: self.plan.config_path.display().to_string(),
            pid: std::process::id(),
            uptime_secs: now.duration_since(self.started).as_secs_f64(),
            replicas: self
                .slots
                .iter()
                .map(|s| ReplicaStatus {
                    worker: self.workers[s.worker].name.clone(),
                    replica: s.replica,
                    pid: s.pid,
                    state: s.machine.state().kind(),
                    uptime_secs: s.running_since.map(|t| now.duration_since(t).as_secs_f64()),
                    restarts: s.restarts,
                    last_exit: s.last_exit.map(|c| c.as_str().to_string()),
                })
                .collect(),
            counters: self.counters.clone(),
            shutting_down: self.shutting_down,
            taken: Some(now),
        };
        self.status_tx.send_replace(Arc::new(status));
    }

    pub(super) fn on_control(
        &mut self,
        req: ControlRequest,
        reply: oneshot::Sender<ControlResponse>,
    ) {
        match req {
            ControlRequest::Status => {
                self.publish();
                let _ = reply.send(ControlResponse {
                    ok: true,
                    message: String::new(),
                    status: Some((**self.status_tx.borrow()).clone()),
                });
            }
            ControlRequest::Restart { target } => {
                let (name, index) = match target.rsplit_once('.') {
                    Some((n, i)) if i.parse::<u32>().is_ok() => {
                        (n.to_string(), i.parse::<u32>().ok())
                    }
                    _ => (target.clone(), None),
                };
                let slots: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| {
                        self.workers[self.slots[i].worker].name == name
                            && index.is_none_or(|n| self.slots[i].replica == n)
                    })
                    .collect();
                if slots.is_empty() {
                    let names: Vec<&str> = self.workers.iter().map(|w| w.name.as_str()).collect();
                    let hint = match crate::config::nearest(&name, &names) {
                        Some(n) if n != name => format!("; did you mean {n:?}?"),
                        _ => String::new(),
                    };
                    let _ = reply.send(ControlResponse {
                        ok: false,
                        message: format!(
                            "no replica {target:?}; workers: {} (use NAME or NAME.N){hint}",
                            names.join(", ")
                        ),
                        status: None,
                    });
                    return;
                }
                if self.shutting_down {
                    let _ = reply.send(ControlResponse {
                        ok: false,
                        message: "agentsup is shutting down".into(),
                        status: None,
                    });
                    return;
                }
                let labels: Vec<String> =
                    slots.iter().map(|&i| self.slots[i].label.clone()).collect();
                tracing::info!(
                    "restart requested over the control socket: {}",
                    labels.join(", ")
                );
                for &slot in &slots {
                    self.slots[slot].restart_reason = RestartReason::Manual;
                }
                // Idle replicas (backoff, auth-blocked, failed, exited) start now;
                // running ones restart one at a time.
                let mut running = Vec::new();
                for slot in slots {
                    match self.slots[slot].machine.state() {
                        crate::replica::State::Running { .. } => running.push(slot),
                        crate::replica::State::Failed { .. }
                        | crate::replica::State::Exited
                        | crate::replica::State::Stopped => self.drive(slot, Event::Start),
                        _ => self.drive(slot, Event::RestartRequested { at: Instant::now() }),
                    }
                }
                self.queue_rolling(running);
                let _ = reply.send(ControlResponse {
                    ok: true,
                    message: format!("restarting {} (one at a time)", labels.join(", ")),
                    status: None,
                });
            }
            ControlRequest::Reload => {
                tracing::info!(
                    "reload requested over the control socket: re-reading and re-checking every source"
                );
                self.reload_requested = true;
                self.reload_replies.push(reply);
                self.start_reread();
            }
        }
    }
}
