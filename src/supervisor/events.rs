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
        // On a terminal (the formatter has a width) a short headline and an
        // indented detail; a pipe or a file keeps one line per event for grep.
        let msg = if json || self.sink.formatter().width().is_none() {
            transition_message(t)
        } else {
            transition_pretty(t)
        };
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

/// The whole transition in one sentence, as JSON's `message` has always had it.
fn transition_message(t: &replica::Transition) -> String {
    let mut msg = state_change(t);
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
    if !t.reason.is_empty() && !stopped && !ROUTINE.contains(&t.reason.as_str()) {
        msg.push_str(": ");
        msg.push_str(&t.reason);
    }
    msg
}

/// For people (issue 15: readable at 80 columns): a short headline (the state
/// change, the exit, the class, the decision) and, for an exit, the pid and why
/// it was classified so on an indented line below, which the formatter wraps.
fn transition_pretty(t: &replica::Transition) -> String {
    let exited = t.status.is_some() && t.class.is_some();
    if !exited {
        return transition_message(t);
    }
    let stopped = t.to == StateKind::Stopped;
    let (detail, decision) = split_decision(&t.reason);
    // A stop agentsup asked for says nothing the headline does not.
    let asked = t.from == StateKind::Stopping && t.class == Some(ExitClass::Ok);
    let show_detail = !(stopped || asked || detail.is_empty());
    let mut msg = state_change(t);
    if let Some(pid) = t.pid.filter(|_| !show_detail) {
        msg.push_str(&format!(" (pid {pid})"));
    }
    if let Some(status) = t.status {
        msg.push_str(&format!(", {status}"));
    }
    if let Some(class) = t.class.filter(|_| !stopped) {
        msg.push_str(&format!(", class {class}"));
    }
    if let Some(decision) = decision.filter(|_| !stopped) {
        msg.push_str(": ");
        msg.push_str(decision);
    }
    if show_detail {
        match t.pid {
            Some(pid) => msg.push_str(&format!("\n  pid {pid}: {detail}")),
            None => msg.push_str(&format!("\n  {detail}")),
        }
    }
    msg
}

fn state_change(t: &replica::Transition) -> String {
    if t.from == t.to {
        t.to.to_string()
    } else {
        format!("{} -> {}", t.from, t.to)
    }
}

/// Reasons not worth printing after the state change they caused.
const ROUTINE: [&str; 4] = ["starting", "spawned", "stopped", "stop requested"];

/// What the replica machine decided after an exit, which it appends to the
/// classification's reason as `"; decision"` (`replica::Note::because`). Split off
/// only when it is one of those decisions: a classification reason has `; ` of its
/// own.
fn split_decision(reason: &str) -> (&str, Option<&str>) {
    const DECISIONS: [&str; 6] = [
        "re-reading sources before restarting",
        "restarting cannot help",
        "restart = never",
        "gave up after ",
        "restart requested",
        "restart ",
    ];
    match reason.rsplit_once("; ") {
        Some((detail, decision)) if DECISIONS.iter().any(|d| decision.starts_with(d)) => {
            (detail, Some(decision))
        }
        _ if DECISIONS.iter().any(|d| reason.starts_with(d)) => ("", Some(reason)),
        _ => (reason, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(from: StateKind, to: StateKind, class: ExitClass, reason: &str) -> replica::Transition {
        replica::Transition {
            worker: "planner".into(),
            replica: 0,
            from,
            to,
            pid: Some(4711),
            status: Some(Termination::Exited(1)),
            class: Some(class),
            delay: None,
            reason: reason.into(),
        }
    }

    #[test]
    fn an_exit_reads_as_a_headline_and_an_indented_detail() {
        let t = exit(
            StateKind::Running,
            StateKind::Backoff,
            ExitClass::Auth,
            "matched `AuthenticationError`: the provider rejected a credential; the key it echoed is the injected OPENAI_API_KEY; re-reading sources before restarting",
        );
        assert_eq!(
            transition_pretty(&t),
            "running -> backoff, status 1, class auth: re-reading sources before restarting\n  \
             pid 4711: matched `AuthenticationError`: the provider rejected a credential; the key it echoed is the injected OPENAI_API_KEY"
        );
        // JSON keeps the one sentence with everything in it.
        let json = transition_message(&t);
        assert!(json.starts_with("running -> backoff (pid 4711), status 1, class auth: matched"));
        assert!(json.ends_with("; re-reading sources before restarting"));
    }

    #[test]
    fn a_reason_without_a_known_decision_stays_detail() {
        assert_eq!(
            split_decision("a; b"),
            ("a; b", None),
            "a classification's own `; ` is not a decision"
        );
        assert_eq!(
            split_decision("x; restart 2 in 1s"),
            ("x", Some("restart 2 in 1s"))
        );
        assert_eq!(
            split_decision("restart requested"),
            ("", Some("restart requested"))
        );
        let t = exit(
            StateKind::Stopping,
            StateKind::Starting,
            ExitClass::Ok,
            "stopped (ended with signal 15 after agentsup asked it to stop); restart requested",
        );
        assert_eq!(
            transition_pretty(&t),
            "stopping -> starting (pid 4711), status 1, class ok: restart requested"
        );
    }
}
