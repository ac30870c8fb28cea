//! How the dispatcher reports: one supervisor event per replica transition (SPEC 5:
//! worker, replica, pid, exit status and reason), and the classification of each
//! exit from its status and output tail.

use super::Dispatcher;
use crate::auth::{self, ClassifyInput, ExitClass, Termination};
use crate::replica::{self, StateKind};

impl Dispatcher {
    pub(super) fn log_transition(&self, t: &replica::Transition) {
        use crate::output::{Format, SupervisorEvent};
        let json = self.sink.formatter().format() == Format::Json;
        // The first start of every replica is implied by its `starting -> running`
        // line; people reading pretty output are spared the extra line.
        if !json && t.from == StateKind::Stopped && t.to == StateKind::Starting {
            return;
        }
        let mut msg = if t.from == t.to {
            t.to.to_string()
        } else {
            format!("{} -> {}", t.from, t.to)
        };
        if let Some(pid) = t.pid {
            msg.push_str(&format!(" (pid {pid})"));
        }
        let stopped = t.to == StateKind::Stopped;
        if let Some(status) = t.status {
            msg.push_str(&format!(", {status}"));
        }
        if let Some(class) = t.class.filter(|_| !stopped) {
            msg.push_str(&format!(", class {class}"));
        }
        let routine = ["starting", "spawned", "stopped", "stop requested"];
        if !t.reason.is_empty() && !stopped && !routine.contains(&t.reason.as_str()) {
            msg.push_str(": ");
            msg.push_str(&t.reason);
        }
        // A scheduled delay is stated in the reason (`restart 2 in 4s`, `retrying
        // in 8s`); JSON consumers get it as `delay_ms` too.
        let level = if t.to == StateKind::Failed {
            tracing::Level::ERROR
        } else if matches!(t.class, Some(c) if c != ExitClass::Ok) || t.to == StateKind::AuthBlocked
        {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        };
        let mut ev = SupervisorEvent::new(level, msg)
            .field("worker", t.worker.clone())
            .field("replica", t.replica);
        // Pretty lines read as `planner.0: running -> backoff …`; the machine fields
        // are for JSON consumers only.
        if json {
            ev = ev
                .field("event", "transition")
                .field("from", t.from.as_str())
                .field("to", t.to.as_str())
                .field("pid", t.pid.map_or(0, i64::from));
            if let Some(class) = t.class {
                ev = ev.field("class", class.as_str());
            }
            if let Some(status) = t.status {
                ev = ev.field("status", status.to_string());
            }
            if let Some(d) = t.delay {
                ev = ev.field("delay_ms", d.as_millis() as u64);
            }
        }
        let _ = self.sink.event_blocking(&ev);
    }

    pub(super) fn classify(
        &self,
        slot: usize,
        term: Termination,
    ) -> (Termination, ExitClass, String) {
        let io = &self.io[slot];
        let worker = self.worker_of(slot);
        // stderr last: tracebacks go there, and signatures near the end weigh most.
        let [out, err] = &io.tail;
        let out = out.lock().map(|t| t.text()).unwrap_or_default();
        let err = err.lock().map(|t| t.text()).unwrap_or_default();
        let tail = match (out.is_empty(), err.is_empty()) {
            (_, true) => out,
            (true, false) => err,
            (false, false) => format!("{out}\n{err}"),
        };
        let c = auth::classify(&ClassifyInput {
            termination: term,
            was_stop_requested: self.fleet.stop_requested(slot),
            exit_codes: &worker.auth.exit_codes,
            patterns: &worker.auth.patterns,
            tail: &tail,
            injected: &io.injected,
        });
        let mut detail = c.reason.clone();
        // A malformed key's reason already names the declared candidates (or the keys
        // it checked); the SDK "wanted" a variable only when it found none.
        if c.class == ExitClass::Config && c.tier != Some(auth::Tier::Malformed) {
            if let Some(var) = &c.wanted_var {
                detail.push_str(&format!(
                    "; the SDK wanted {var}, which worker {:?} {}",
                    worker.name,
                    if worker.declares(var) {
                        "declares: check its value with `agentsup check`"
                    } else {
                        "does not declare: add it to `keys`"
                    }
                ));
            }
        }
        (term, c.class, detail)
    }
}
