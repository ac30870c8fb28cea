//! What a running supervisor publishes about itself: replica states and counters.
//!
//! The dispatcher (the only owner of replica state) builds a fresh [`Status`] after
//! every event and publishes it on a `tokio::sync::watch` channel. Readers — the
//! control socket (`agentsup status`), the health endpoints (`/readyz`) and
//! `/metrics` — only ever see these snapshots, so they never lock anything the
//! dispatcher uses. Nothing here holds an environment value (SPEC 5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One replica, as `agentsup status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Worker name.
    pub worker: String,
    /// 0-based replica index.
    pub replica: u32,
    /// Pid of the running process, if any.
    pub pid: Option<u32>,
    /// State label (SPEC 5): starting, running, stopping, backoff, auth-blocked,
    /// failed, stopped, exited.
    pub state: String,
    /// Seconds since the current process started, while one runs.
    pub uptime_secs: Option<f64>,
    /// How many times this replica was restarted (spawns after the first).
    pub restarts: u64,
    /// Class of the last exit (`ok`, `auth`, `config`, `crash`), if it exited.
    pub last_exit: Option<String>,
    /// With a `ready` probe: whether the current run passed it (`None` without one).
    #[serde(default)]
    pub ready: Option<bool>,
}

/// Counters for `/metrics` (SPEC 8). Keys are label values; never values of secrets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Restarts by `(worker, reason)`; reason is the exit class that caused them, or
    /// `rotation` / `reload` / `manual`.
    pub restarts: BTreeMap<(String, String), u64>,
    /// Exits classified `auth`, by worker.
    pub auth_failures: BTreeMap<String, u64>,
    /// Re-reads of the sources whose values were adopted.
    pub secret_reloads: u64,
    /// Re-reads whose values failed the checks and were refused.
    pub secret_reload_failures: u64,
}

/// One refreshed `command` source (`refresh`, `ttl_pointer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefreshStatus {
    /// 1-based position among the `[[source]]` entries.
    pub source: usize,
    /// The program's file name (never its arguments).
    pub program: String,
    /// Refreshes whose values were adopted.
    pub ok: u64,
    /// Refreshes that failed (the old values stayed).
    pub failed: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Seconds until the next refresh, when one is scheduled.
    pub next_in_secs: Option<f64>,
    /// The lease the command last announced (`ttl_pointer`), in seconds.
    pub lease_secs: Option<f64>,
}

/// A snapshot of the whole supervisor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The config file, as given.
    pub config: String,
    /// agentsup's pid.
    pub pid: u32,
    /// Seconds since agentsup started.
    pub uptime_secs: f64,
    /// Every replica, in config order.
    pub replicas: Vec<ReplicaStatus>,
    /// Counters.
    pub counters: Counters,
    /// `command` sources refreshed on a timer (issue 14).
    #[serde(default)]
    pub refresh: Vec<RefreshStatus>,
    /// True once a stop of everything has begun.
    pub shutting_down: bool,
    /// When this snapshot was taken, so readers can age its uptimes.
    #[serde(skip)]
    pub taken: Option<std::time::Instant>,
}

impl Status {
    /// This snapshot with its uptimes advanced to now (snapshots are taken on
    /// events, and a quiet supervisor publishes none for a long time).
    pub fn aged(&self) -> Status {
        let mut s = self.clone();
        if let Some(at) = s.taken {
            let dt = at.elapsed().as_secs_f64();
            s.uptime_secs += dt;
            for r in &mut s.replicas {
                if let Some(u) = r.uptime_secs.as_mut() {
                    *u += dt;
                }
            }
            s.taken = Some(std::time::Instant::now());
        }
        s
    }
}

impl Status {
    /// Worker names in config order, each once.
    pub fn workers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.replicas {
            if out.last() != Some(&r.worker.as_str()) && !out.contains(&r.worker.as_str()) {
                out.push(&r.worker);
            }
        }
        out
    }

    /// `/readyz` (SPEC 8): every worker has a running replica and none is
    /// auth-blocked or failed. Returns why not, when not ready.
    pub fn readiness(&self) -> Result<(), String> {
        if self.shutting_down {
            return Err("shutting down".into());
        }
        let mut problems = Vec::new();
        for w in self.workers() {
            let mine: Vec<&ReplicaStatus> =
                self.replicas.iter().filter(|r| r.worker == w).collect();
            for r in &mine {
                if r.state == "auth-blocked" || r.state == "failed" {
                    problems.push(format!("{}.{} is {}", r.worker, r.replica, r.state));
                }
            }
            // A replica whose `ready` probe has not passed yet does not count.
            let up = |r: &&&ReplicaStatus| r.state == "running" && r.ready != Some(false);
            if !mine.iter().any(|r| up(&r)) {
                if mine.iter().any(|r| r.state == "running") {
                    problems.push(format!("{w} has no ready replica yet (`ready` probe)"));
                } else {
                    problems.push(format!("{w} has no running replica"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(worker: &str, replica: u32, state: &str) -> ReplicaStatus {
        ReplicaStatus {
            worker: worker.into(),
            replica,
            pid: None,
            state: state.into(),
            uptime_secs: None,
            restarts: 0,
            last_exit: None,
            ready: None,
        }
    }

    #[test]
    fn readiness_needs_a_running_replica_per_worker_and_no_blocked_one() {
        let mut s = Status {
            replicas: vec![
                r("a", 0, "running"),
                r("a", 1, "backoff"),
                r("b", 0, "running"),
            ],
            ..Status::default()
        };
        assert!(s.readiness().is_ok());
        s.replicas[1].state = "auth-blocked".into();
        assert_eq!(s.readiness().unwrap_err(), "a.1 is auth-blocked");
        s.replicas[1].state = "running".into();
        s.replicas[2].state = "starting".into();
        assert_eq!(s.readiness().unwrap_err(), "b has no running replica");
    }
}

/// A request on the control socket (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// The current [`Status`].
    Status,
    /// Restart `NAME` (every replica, one at a time) or `NAME.N`.
    Restart {
        /// `NAME` or `NAME.N`.
        target: String,
    },
    /// Re-read and re-check the sources, as SIGHUP does.
    Reload,
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// One human sentence.
    pub message: String,
    /// For `status`.
    pub status: Option<Status>,
}
