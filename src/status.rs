//! What a running supervisor publishes about itself: replica states and counters.
//!
//! The dispatcher (the only owner of replica state) builds a fresh [`Status`] after
//! every event and publishes it on a `tokio::sync::watch` channel. Readers — the
//! control socket (`agentsup status`), the health endpoints (`/readyz`) and
//! `/metrics` — only ever see these snapshots, so they never lock anything the
//! dispatcher uses. Nothing here holds an environment value (SPEC 5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::ExitClass;
use crate::replica::StateKind;

/// One replica, as `agentsup status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Worker name.
    pub worker: String,
    /// 0-based replica index.
    pub replica: u32,
    /// Pid of the running process, if any.
    pub pid: Option<u32>,
    /// State (SPEC 5), on the wire as its label: starting, running, stopping,
    /// backoff, auth-blocked, failed, stopped, exited.
    pub state: StateKind,
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

/// Why a replica was started again (`agentsup_restarts_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartReason {
    /// It crashed (exit class `crash`, or a failed spawn).
    Crash,
    /// It exited with a rejected credential (class `auth`).
    Auth,
    /// It exited with status 0 under `restart = "always"`.
    Ok,
    /// Class `config` (never restarted by itself; kept so every class has a reason).
    Config,
    /// Its keys changed (a watched source, or the re-read of an auth failure).
    Rotation,
    /// SIGHUP or `agentsup reload` changed its environment.
    Reload,
    /// `agentsup restart`.
    Manual,
}

impl RestartReason {
    /// The reasons `/metrics` lists for every worker, from 0.
    pub(crate) const LISTED: [RestartReason; 6] = [
        RestartReason::Crash,
        RestartReason::Auth,
        RestartReason::Ok,
        RestartReason::Rotation,
        RestartReason::Reload,
        RestartReason::Manual,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Auth => "auth",
            RestartReason::Ok => "ok",
            RestartReason::Config => "config",
            RestartReason::Rotation => "rotation",
            RestartReason::Reload => "reload",
            RestartReason::Manual => "manual",
        }
    }
}

impl From<ExitClass> for RestartReason {
    fn from(class: ExitClass) -> Self {
        match class {
            ExitClass::Ok => RestartReason::Ok,
            ExitClass::Auth => RestartReason::Auth,
            ExitClass::Config => RestartReason::Config,
            ExitClass::Crash => RestartReason::Crash,
        }
    }
}

impl std::fmt::Display for RestartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ReplicaStatus {
    /// The one readiness rule for a replica (SPEC 8): its state counts
    /// (a process runs) and, with a `ready` probe, the probe passed.
    pub(crate) fn is_ready(&self) -> bool {
        self.state.is_running() && self.ready != Some(false)
    }
}

/// Counters for `/metrics` (SPEC 8). Keys are label values; never values of secrets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Restarts by worker, then reason (`{"planner": {"manual": 2, "auth": 1}}`).
    pub restarts: BTreeMap<String, BTreeMap<RestartReason, u64>>,
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
    pub(crate) fn aged(&self) -> Status {
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
    pub(crate) fn workers(&self) -> Vec<&str> {
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
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if self.shutting_down {
            return Err("shutting down".into());
        }
        let mut problems = Vec::new();
        for w in self.workers() {
            let mine: Vec<&ReplicaStatus> =
                self.replicas.iter().filter(|r| r.worker == w).collect();
            for r in &mine {
                if r.state.blocks_readiness() {
                    problems.push(format!("{}.{} is {}", r.worker, r.replica, r.state));
                }
            }
            // A replica whose `ready` probe has not passed yet does not count.
            if !mine.iter().any(|r| r.is_ready()) {
                if mine.iter().any(|r| r.state.is_running()) {
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

    fn r(worker: &str, replica: u32, state: StateKind) -> ReplicaStatus {
        ReplicaStatus {
            worker: worker.into(),
            replica,
            pid: None,
            state,
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
                r("a", 0, StateKind::Running),
                r("a", 1, StateKind::Backoff),
                r("b", 0, StateKind::Running),
            ],
            ..Status::default()
        };
        assert!(s.readiness().is_ok());
        s.replicas[1].state = StateKind::AuthBlocked;
        assert_eq!(s.readiness().unwrap_err(), "a.1 is auth-blocked");
        s.replicas[1].state = StateKind::Failed;
        assert_eq!(s.readiness().unwrap_err(), "a.1 is failed");
        s.replicas[1].state = StateKind::Running;
        s.replicas[2].state = StateKind::Starting;
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
    #[serde(default)]
    pub message: String,
    /// For `status`.
    #[serde(default)]
    pub status: Option<Status>,
}
