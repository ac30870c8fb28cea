//! The per-replica state machine (SPEC 5) as a pure function.
//!
//! `Replica::step` takes one `Event` and returns the `Action`s the supervisor
//! must perform; it never spawns, signals, sleeps or reads a clock. All time comes in
//! with the events (`at`), and randomness comes in as a jitter sample, so every
//! transition is testable with plain values (STYLE §7: "transitions in a pure
//! function"; STYLE §4: time as a function of `Instant`).
//!
//! This module owns: states and their labels, restart policy, backoff arithmetic,
//! the crash give-up count and the auth-failure protocol (re-read first, restart at
//! once on rotation, back off and eventually mark `auth-blocked` otherwise). It does
//! not own exit classification ([`crate::auth`]), re-reading sources, timers or the
//! "one incident, not N" grouping of replicas: those are the supervisor's.
//!
//! Every transition also emits `Action::Log`:
//!
//! ```text
//! from                  event                               to                  actions
//! stopped/exited/failed Start, RestartRequested             starting            Spawn
//! starting              Spawned                             running
//! starting              SpawnFailed                         (as a crash exit)
//! running               Exited{ok}                          exited (backoff if restart = always)
//! running               Exited{crash}                       backoff | failed    ArmTimer | GiveUp
//! running               Exited{auth}                        backoff (pending)   RereadSources
//! running               Exited{config}                      failed              GiveUp
//! backoff (pending)     RereadDone{unchanged}               backoff | blocked   ArmTimer
//! backoff/auth-blocked  RereadDone{changed}, SourcesChanged starting            Spawn
//! backoff/auth-blocked  TimerFired (due)                    starting            Spawn
//! backoff/auth-blocked  StopRequested, ForceKill            stopped
//! running               StopRequested, RestartRequested     stopping            Signal, ArmTimer
//! stopping              TimerFired (deadline), ForceKill    stopping            Signal(kill)
//! stopping              Exited                              stopped | starting  (Spawn if restart)
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::{ExitClass, Termination};

/// After this many auth failures on the same key values, with unchanged sources,
/// the replica is `auth-blocked` (SPEC 5). Counted per rejected value, not per run
/// in a row: a queue worker idles between tasks, so its runs outlast `reset_after`
/// and a consecutive count would never get past one (issue 14).
pub(crate) const AUTH_BLOCK_AFTER: u32 = 3;

/// Which exits are followed by a restart (SPEC 5, `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RestartPolicy {
    /// Restart after every exit, including status 0.
    Always,
    /// Restart after `auth` and `crash` exits (the example in SPEC 2).
    #[default]
    OnFailure,
    /// Never restart; a failed run leaves the replica `failed`.
    Never,
}

/// Backoff between restarts (SPEC 2, `backoff`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    /// Delay before the first restart of a streak.
    pub initial: Duration,
    /// Hard ceiling of a crash-restart delay, jitter included.
    pub max: Duration,
    /// Growth factor per restart; values below 1 (or not finite) count as 1.
    pub multiplier: f64,
    /// Relative jitter in `[0, 1]`: `0.1` spreads a delay by ±10 %.
    pub jitter: f64,
    /// A run that lasted this long resets the streak: the next failure starts again
    /// at `initial` and the give-up count restarts from zero.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// The values of SPEC 2's example: 1 s, 60 s, ×2, ±10 %, reset after 30 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Everything a replica's transitions depend on, built by the plan from the worker's
/// `supervisor.toml` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// `restart`.
    pub restart: RestartPolicy,
    /// `backoff`, used for crash restarts, `always` restarts and (capped by
    /// `auth_max_delay` instead of `max`) auth retries.
    pub backoff: Backoff,
    /// `max_restarts`: after this many consecutive crash-class runs the replica is
    /// `failed`. `0` means no limit.
    pub max_restarts: u32,
    /// `auth.max_delay`: the ceiling of the delay between auth retries, which never
    /// give up.
    pub auth_max_delay: Duration,
    /// `stop_timeout`: grace between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
}

impl Default for Policy {
    /// The values of SPEC 2's example.
    fn default() -> Self {
        Policy {
            restart: RestartPolicy::OnFailure,
            backoff: Backoff::default(),
            max_restarts: 10,
            auth_max_delay: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// A replica's state (SPEC 5). Process ids are `pid_t`; each worker is its own
/// process-group leader, so the pid is also the group to signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// A spawn was requested and its outcome is not known yet.
    Starting,
    /// The process runs.
    Running {
        /// Its pid (and process group).
        pid: i32,
        /// When it was spawned, to measure the run against `reset_after`.
        since: Instant,
    },
    /// The stop signal was sent; SIGKILL follows at `deadline`.
    Stopping {
        /// Its pid (and process group).
        pid: i32,
        /// When the stop grace ends.
        deadline: Instant,
    },
    /// Waiting to restart after a failure (or, right after an auth failure, waiting
    /// for the sources to be re-read).
    Backoff {
        /// When to restart.
        until: Instant,
        /// Which restart of the current streak this will be (1-based).
        attempt: u32,
    },
    /// Auth failures repeat and the sources did not change: not ready, but retries
    /// continue, and a source change restarts at once.
    AuthBlocked {
        /// When to retry.
        until: Instant,
    },
    /// Given up: restarting cannot help or `max_restarts` was reached. `on_give_up`
    /// applies.
    Failed {
        /// Why, for `status` and the log. Never holds output text.
        reason: String,
    },
    /// Stopped on request (or not started yet).
    Stopped,
    /// Finished for good with no restart due (status 0 without `restart = always`).
    Exited,
}

/// What kind of state a replica is in, without the state's data: what transitions
/// log, `status` and `/metrics` show (SPEC 5), and what readiness is decided on.
/// Serialised as its label (`auth-blocked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// `State::Starting`.
    Starting,
    /// `State::Running`.
    Running,
    /// `State::Stopping`.
    Stopping,
    /// `State::Backoff`.
    Backoff,
    /// `State::AuthBlocked`.
    AuthBlocked,
    /// `State::Failed`.
    Failed,
    /// `State::Stopped`.
    Stopped,
    /// `State::Exited`.
    Exited,
}

impl StateKind {
    /// Every kind, in the order `/metrics` lists them.
    pub(crate) const ALL: [StateKind; 8] = [
        StateKind::Starting,
        StateKind::Running,
        StateKind::Stopping,
        StateKind::Backoff,
        StateKind::AuthBlocked,
        StateKind::Failed,
        StateKind::Stopped,
        StateKind::Exited,
    ];

    /// The state's name in logs, `status` and metrics (SPEC 5).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StateKind::Starting => "starting",
            StateKind::Running => "running",
            StateKind::Stopping => "stopping",
            StateKind::Backoff => "backoff",
            StateKind::AuthBlocked => "auth-blocked",
            StateKind::Failed => "failed",
            StateKind::Stopped => "stopped",
            StateKind::Exited => "exited",
        }
    }

    /// Whether a process runs: the state half of the readiness rule (SPEC 8;
    /// [`crate::status::ReplicaStatus::is_ready`] adds the `ready` probe).
    pub(crate) fn is_running(self) -> bool {
        self == StateKind::Running
    }

    /// True for the states that make `/readyz` fail whatever the other replicas
    /// do: `auth-blocked` and `failed` need someone to look.
    pub(crate) fn blocks_readiness(self) -> bool {
        matches!(self, StateKind::AuthBlocked | StateKind::Failed)
    }

    /// True when no process exists and none will start by itself.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            StateKind::Stopped | StateKind::Exited | StateKind::Failed
        )
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl State {
    /// The kind of this state.
    pub(crate) fn kind(&self) -> StateKind {
        match self {
            State::Starting => StateKind::Starting,
            State::Running { .. } => StateKind::Running,
            State::Stopping { .. } => StateKind::Stopping,
            State::Backoff { .. } => StateKind::Backoff,
            State::AuthBlocked { .. } => StateKind::AuthBlocked,
            State::Failed { .. } => StateKind::Failed,
            State::Stopped => StateKind::Stopped,
            State::Exited => StateKind::Exited,
        }
    }
}

/// The state's name in logs, `status` and metrics (SPEC 5), for the tests; the
/// code uses [`StateKind::as_str`] through `Display`.
#[cfg(test)]
pub(crate) fn label(state: &State) -> &'static str {
    state.kind().as_str()
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())
    }
}

/// Something that happened to a replica, as the supervisor observed it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Start a replica that is stopped (initially, or after `stopped`/`exited`/
    /// `failed`); counters start from zero.
    Start,
    /// The process of a [`Action::Spawn`] exists.
    Spawned {
        /// Its pid (and process group).
        pid: i32,
        /// When.
        at: Instant,
    },
    /// [`Action::Spawn`] failed before a process existed (command not found, …).
    /// Counts as a crash-class run.
    SpawnFailed {
        /// Why; the supervisor's own text, never a value.
        reason: String,
        /// When.
        at: Instant,
    },
    /// The process ended and [`crate::auth::classify`] classified it.
    Exited {
        /// Exit status or signal, for the log.
        status: Termination,
        /// The class, which decides what happens next.
        class: ExitClass,
        /// The classification's reason (safe to log).
        reason: String,
        /// A fingerprint of the values of the keys the run was given (never the
        /// values themselves). Auth failures are counted per rejected value: the
        /// count goes on across runs of any length on the same value and starts
        /// over when the value changes.
        key: Option<u64>,
        /// When it was reaped.
        at: Instant,
    },
    /// The sources were re-read after [`Action::RereadSources`] (or for another
    /// replica of the same incident). `changed_keys` are this worker's declared keys
    /// whose values changed; empty means unchanged.
    RereadDone {
        /// Names, optionally with where the new value came from (`OPENAI_API_KEY
        /// (/run/secrets/OPENAI_API_KEY)`, SPEC 5: "say which key changed and
        /// where"); never values. They are quoted in the log.
        changed_keys: Vec<String>,
        /// When the re-read finished.
        at: Instant,
    },
    /// A timer armed by [`Action::ArmTimer`] fired. Early or stale fires are ignored,
    /// so the supervisor need not cancel timers.
    TimerFired {
        /// Now.
        at: Instant,
    },
    /// Stop this replica (shutdown, `--only`, removal).
    StopRequested {
        /// Now.
        at: Instant,
    },
    /// Kill at once (a second SIGTERM/SIGINT to agentsup, SPEC 5).
    ForceKill {
        /// Now.
        at: Instant,
    },
    /// A watched source (file or `dir`, including a Kubernetes `..data` swap) changed
    /// and was re-read: a waiting replica restarts now instead of at its deadline.
    SourcesChanged,
    /// `agentsup restart NAME`, or a reload that changed this replica's environment:
    /// stop gracefully if running, then start again.
    RestartRequested {
        /// Now.
        at: Instant,
    },
}

/// Which signal [`Action::Signal`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// The worker's `stop_signal` (SIGTERM by default).
    Stop,
    /// SIGKILL.
    Kill,
}

/// One log event per transition (SPEC 5: "worker, replica, pid, exit status and
/// reason"). Holds no environment values and no worker output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    /// Worker name.
    pub worker: String,
    /// Replica index (0-based).
    pub replica: u32,
    /// The state left.
    pub from: StateKind,
    /// The state entered (may equal `from`, e.g. SIGKILL while stopping).
    pub to: StateKind,
    /// The process concerned, if any.
    pub pid: Option<i32>,
    /// How it ended, on exit transitions.
    pub status: Option<Termination>,
    /// Its class, on exit transitions.
    pub class: Option<ExitClass>,
    /// The delay before the next start, when one was scheduled (the reason states
    /// it too).
    pub delay: Option<Duration>,
    /// Why, in one human sentence.
    pub reason: String,
}

/// What the supervisor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Build the replica's environment from the current snapshot and spawn it; then
    /// report [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn,
    /// Send a signal to a process group.
    Signal {
        /// The process group (the worker's pid).
        group: i32,
        /// Which signal.
        sig: StopSignal,
    },
    /// Deliver [`Event::TimerFired`] at (or after) this instant.
    ArmTimer {
        /// When.
        at: Instant,
    },
    /// Re-read all sources and report [`Event::RereadDone`] (SPEC 5: after an auth
    /// failure, before any restart). Replicas failing together may share one re-read.
    RereadSources,
    /// Emit this transition as a log event.
    Log(Transition),
    /// The replica failed for good: apply `on_give_up`.
    GiveUp,
}

/// One replica of one worker: its state and the counters its transitions need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replica {
    worker: String,
    index: u32,
    state: State,
    /// Consecutive crash-class runs (for `max_restarts`).
    crash_streak: u32,
    /// Restarts made in the current backoff streak: the exponent `n`.
    backoff_n: u32,
    /// Auth failures on the value in `rejected` after which the sources were
    /// unchanged, whatever the runs' lengths and the exits between them.
    auth_streak: u32,
    /// The fingerprint of the key values the last auth failure was on.
    rejected: Option<Option<u64>>,
    /// Set between an auth exit and its [`Event::RereadDone`]: the exit time, from
    /// which the auth delay is measured.
    reread_pending: Option<Instant>,
    /// A stop (or kill) arrived while starting; applied once the spawn resolves.
    stop_pending: Option<StopSignal>,
    /// A restart (a reload, a rotation, `agentsup restart`) arrived while starting:
    /// the process being started may have the old environment, so it is restarted
    /// as soon as it is up. Dropped if the spawn fails (the next start reads the
    /// current environment anyway).
    restart_pending: bool,
    /// Start again once the process has exited from `stopping`.
    restart_after_stop: bool,
    /// SIGKILL was already sent during this stop.
    kill_sent: bool,
}

impl Replica {
    /// A replica that has not started: state `stopped`. Send [`Event::Start`].
    pub(crate) fn new(worker: impl Into<String>, index: u32) -> Self {
        Replica {
            worker: worker.into(),
            index,
            state: State::Stopped,
            crash_streak: 0,
            backoff_n: 0,
            auth_streak: 0,
            rejected: None,
            reread_pending: None,
            stop_pending: None,
            restart_pending: false,
            restart_after_stop: false,
            kill_sent: false,
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Consecutive crash-class runs so far (for `status`).
    #[cfg(test)]
    pub(crate) fn crash_streak(&self) -> u32 {
        self.crash_streak
    }

    /// Consecutive auth failures with unchanged sources so far (for `status`).
    pub(crate) fn auth_streak(&self) -> u32 {
        self.auth_streak
    }

    /// True between an auth exit and the matching [`Event::RereadDone`].
    #[cfg(test)]
    pub(crate) fn reread_pending(&self) -> bool {
        self.reread_pending.is_some()
    }

    /// Applies one event and returns what to do, in order. `jitter_sample` is a
    /// uniform sample in `[-1, 1]` (e.g. `rng.f64() * 2.0 - 1.0`), used only when a
    /// backoff delay is computed; tests pass fixed values. Events that make no sense
    /// in the current state (a stale timer, a late exit) change nothing.
    pub(crate) fn step(
        &mut self,
        policy: &Policy,
        event: Event,
        jitter_sample: f64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.on_start(&mut out),
            Event::Spawned { pid, at } => self.on_spawned(policy, pid, at, &mut out),
            Event::SpawnFailed { reason, at } => {
                self.on_spawn_failed(policy, &reason, at, jitter_sample, &mut out);
            }
            Event::Exited {
                status,
                class,
                reason,
                key,
                at,
            } => {
                if class == ExitClass::Auth {
                    self.count_rejected(key);
                }
                self.on_exited(policy, status, class, reason, at, jitter_sample, &mut out);
            }
            Event::RereadDone { changed_keys, at } => {
                self.on_reread(policy, changed_keys, at, jitter_sample, &mut out);
            }
            Event::TimerFired { at } => self.on_timer(policy, at, &mut out),
            Event::StopRequested { at } => self.on_stop(policy, StopSignal::Stop, at, &mut out),
            Event::ForceKill { at } => self.on_stop(policy, StopSignal::Kill, at, &mut out),
            Event::SourcesChanged => {
                if self.is_waiting() && self.reread_pending.is_none() {
                    // A new credential is a new start for the auth count.
                    self.auth_streak = 0;
                    self.restart_now("a watched source changed; restarting now", &mut out);
                }
            }
            Event::RestartRequested { at } => self.on_restart_requested(policy, at, &mut out),
        }
        out
    }

    fn on_start(&mut self, out: &mut Vec<Action>) {
        if matches!(
            self.state,
            State::Stopped | State::Exited | State::Failed { .. }
        ) {
            self.reset_counters();
            self.restart_now("starting", out);
        }
    }

    fn on_spawned(&mut self, policy: &Policy, pid: i32, at: Instant, out: &mut Vec<Action>) {
        if self.state != State::Starting {
            return;
        }
        self.go(
            State::Running { pid, since: at },
            Note::new("spawned").pid(pid),
            out,
        );
        if let Some(sig) = self.stop_pending.take() {
            self.restart_pending = false;
            self.on_stop(policy, sig, at, out);
        } else if std::mem::take(&mut self.restart_pending) {
            self.on_restart_requested(policy, at, out);
        }
    }

    fn on_spawn_failed(
        &mut self,
        policy: &Policy,
        reason: &str,
        at: Instant,
        jitter: f64,
        out: &mut Vec<Action>,
    ) {
        if self.state != State::Starting {
            return;
        }
        let note = Note::new(format!("spawn failed: {reason}"));
        self.restart_pending = false;
        if self.stop_pending.take().is_some() {
            self.go(State::Stopped, note, out);
        } else {
            // No process ran, but for the give-up count it is a failed run: a
            // command that cannot be spawned must not be retried forever.
            self.on_failure(policy, ExitClass::Crash, note, at, jitter, out);
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all parts of one event"
    )]
    fn on_exited(
        &mut self,
        policy: &Policy,
        status: Termination,
        class: ExitClass,
        reason: String,
        at: Instant,
        jitter: f64,
        out: &mut Vec<Action>,
    ) {
        match self.state {
            State::Running { pid, since } => {
                // Horust resets on "started"; SPEC 5 resets once a run lasted
                // `reset_after`, so a crash loop cannot hide behind fast starts.
                // The auth count is not reset here: a queue worker idles between
                // tasks, so a revoked key fails once per long run (issue 14); it is
                // counted per rejected value instead (`count_rejected`).
                if at.saturating_duration_since(since) >= policy.backoff.reset_after {
                    self.crash_streak = 0;
                    self.backoff_n = 0;
                }
                let note = Note::new(reason).pid(pid).exit(status, class);
                self.on_failure(policy, class, note, at, jitter, out);
            }
            State::Stopping { pid, .. } => {
                let note = Note::new(format!("stopped ({reason})"))
                    .pid(pid)
                    .exit(status, class);
                if std::mem::take(&mut self.restart_after_stop) {
                    self.go(State::Starting, note.because("restart requested"), out);
                    out.push(Action::Spawn);
                } else {
                    self.go(State::Stopped, note, out);
                }
            }
            // The exit overtook its Spawned report: account for it as a zero-length
            // run rather than stay `starting` forever.
            State::Starting => {
                let note = Note::new(reason).exit(status, class);
                if self.stop_pending.take().is_some() {
                    self.go(State::Stopped, note, out);
                } else {
                    self.on_failure(policy, class, note, at, jitter, out);
                }
            }
            // A late or duplicate report: the process is already accounted for.
            _ => {}
        }
    }

    /// Decides what follows a finished run (or a failed spawn) of class `class`.
    fn on_failure(
        &mut self,
        policy: &Policy,
        class: ExitClass,
        note: Note,
        at: Instant,
        jitter: f64,
        out: &mut Vec<Action>,
    ) {
        if class != ExitClass::Crash {
            self.crash_streak = 0;
        }
        match class {
            ExitClass::Ok if policy.restart == RestartPolicy::Always => {
                self.schedule(policy, at, jitter, note, out);
            }
            ExitClass::Ok => self.go(State::Exited, note, out),
            // SPEC 5: restarting cannot help, so no restart loop whatever `restart` says.
            ExitClass::Config => self.fail(note.because("restarting cannot help"), out),
            _ if policy.restart == RestartPolicy::Never => {
                self.fail(note.because("restart = never"), out);
            }
            ExitClass::Crash => {
                self.crash_streak = self.crash_streak.saturating_add(1);
                if policy.max_restarts > 0 && self.crash_streak >= policy.max_restarts {
                    let why = format!(
                        "gave up after {} consecutive crash-class runs (max_restarts = {})",
                        self.crash_streak, policy.max_restarts
                    );
                    self.fail(note.because(&why), out);
                } else {
                    self.schedule(policy, at, jitter, note, out);
                }
            }
            ExitClass::Auth => {
                // SPEC 5: re-read all sources first; the restart decision waits for
                // RereadDone, so no timer is armed yet.
                self.reread_pending = Some(at);
                let attempt = self.auth_streak.saturating_add(1);
                self.go(
                    State::Backoff { until: at, attempt },
                    note.because("re-reading sources before restarting"),
                    out,
                );
                out.push(Action::RereadSources);
            }
        }
    }

    fn on_reread(
        &mut self,
        policy: &Policy,
        changed: Vec<String>,
        at: Instant,
        jitter: f64,
        out: &mut Vec<Action>,
    ) {
        let pending = self.reread_pending.take();
        if !self.is_waiting() {
            return;
        }
        if !changed.is_empty() {
            // Ours, or another replica's re-read of the same incident (one incident,
            // not N): either way this replica's credential changed.
            self.auth_streak = 0;
            let why = format!(
                "credential rotated ({} changed); restarting now",
                changed.join(", ")
            );
            self.restart_now(&why, out);
            return;
        }
        let Some(exit_at) = pending else {
            // Another replica's re-read found nothing new: our own timer stands.
            return;
        };
        self.auth_streak = self.auth_streak.saturating_add(1);
        let capped = Backoff {
            max: policy.auth_max_delay,
            ..policy.backoff
        };
        let delay = backoff_delay(&capped, self.auth_streak - 1, jitter);
        let until = (exit_at + delay).max(at);
        let why = format!(
            "sources unchanged after {} auth failure(s) in a row; retrying in {}",
            self.auth_streak,
            humantime::format_duration(round_ms(delay))
        );
        let state = if self.auth_streak >= AUTH_BLOCK_AFTER {
            State::AuthBlocked { until }
        } else {
            State::Backoff {
                until,
                attempt: self.auth_streak,
            }
        };
        self.go(state, Note::new(why).delay(delay), out);
        out.push(Action::ArmTimer { at: until });
    }

    fn on_timer(&mut self, policy: &Policy, at: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Backoff { until, .. } | State::AuthBlocked { until }
                if at >= until && self.reread_pending.is_none() =>
            {
                self.restart_now("backoff elapsed; restarting", out);
            }
            State::Stopping { pid, deadline } if at >= deadline && !self.kill_sent => {
                self.kill_sent = true;
                let why = format!(
                    "did not exit within stop_timeout ({}); sending SIGKILL to its group",
                    humantime::format_duration(policy.stop_timeout)
                );
                self.go(self.state.clone(), Note::new(why).pid(pid), out);
                out.push(Action::Signal {
                    group: pid,
                    sig: StopSignal::Kill,
                });
            }
            _ => {}
        }
    }

    fn on_stop(&mut self, policy: &Policy, sig: StopSignal, at: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Running { pid, .. } => {
                self.restart_after_stop = false;
                let deadline = at + policy.stop_timeout;
                let why = match sig {
                    StopSignal::Stop => "stop requested",
                    StopSignal::Kill => "kill requested",
                };
                self.kill_sent = sig == StopSignal::Kill;
                self.go(
                    State::Stopping { pid, deadline },
                    Note::new(why).pid(pid),
                    out,
                );
                out.push(Action::Signal { group: pid, sig });
                if sig == StopSignal::Stop {
                    out.push(Action::ArmTimer { at: deadline });
                }
            }
            State::Stopping { pid, .. } => {
                // Stop wins over a pending restart; a second request escalates.
                self.restart_after_stop = false;
                if sig == StopSignal::Kill {
                    self.kill_sent = true;
                    self.go(
                        self.state.clone(),
                        Note::new("kill requested").pid(pid),
                        out,
                    );
                    out.push(Action::Signal { group: pid, sig });
                }
            }
            State::Starting => {
                // The spawn's outcome is not known yet; apply the stop to it.
                let strongest = match (self.stop_pending, sig) {
                    (Some(StopSignal::Kill), _) | (_, StopSignal::Kill) => StopSignal::Kill,
                    _ => StopSignal::Stop,
                };
                self.stop_pending = Some(strongest);
            }
            State::Backoff { .. } | State::AuthBlocked { .. } => {
                self.reread_pending = None;
                self.go(
                    State::Stopped,
                    Note::new("stop requested while waiting to restart"),
                    out,
                );
            }
            State::Failed { .. } | State::Stopped | State::Exited => {}
        }
    }

    fn on_restart_requested(&mut self, policy: &Policy, at: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Running { pid, .. } => {
                let deadline = at + policy.stop_timeout;
                self.restart_after_stop = true;
                self.kill_sent = false;
                self.go(
                    State::Stopping { pid, deadline },
                    Note::new("restart requested").pid(pid),
                    out,
                );
                out.push(Action::Signal {
                    group: pid,
                    sig: StopSignal::Stop,
                });
                out.push(Action::ArmTimer { at: deadline });
            }
            State::Stopping { .. } => self.restart_after_stop = true,
            State::Backoff { .. } | State::AuthBlocked { .. } => {
                self.reread_pending = None;
                self.restart_now("restart requested", out);
            }
            State::Stopped | State::Exited | State::Failed { .. } => {
                self.reset_counters();
                self.restart_now("restart requested", out);
            }
            State::Starting => self.restart_pending = true,
        }
    }

    /// True while a restart waits for the replica's start to complete.
    #[cfg(test)]
    pub(crate) fn restart_pending(&self) -> bool {
        self.restart_pending
    }

    /// Schedules a restart with the crash backoff and advances `n`.
    fn schedule(
        &mut self,
        policy: &Policy,
        at: Instant,
        jitter: f64,
        note: Note,
        out: &mut Vec<Action>,
    ) {
        let delay = backoff_delay(&policy.backoff, self.backoff_n, jitter);
        self.backoff_n = self.backoff_n.saturating_add(1);
        let until = at + delay;
        let why = format!(
            "restart {} in {}",
            self.backoff_n,
            humantime::format_duration(round_ms(delay))
        );
        self.go(
            State::Backoff {
                until,
                attempt: self.backoff_n,
            },
            note.because(&why).delay(delay),
            out,
        );
        out.push(Action::ArmTimer { at: until });
    }

    fn restart_now(&mut self, why: &str, out: &mut Vec<Action>) {
        self.go(State::Starting, Note::new(why), out);
        out.push(Action::Spawn);
    }

    fn fail(&mut self, note: Note, out: &mut Vec<Action>) {
        let reason = note.reason.clone();
        self.go(State::Failed { reason }, note, out);
        out.push(Action::GiveUp);
    }

    fn is_waiting(&self) -> bool {
        matches!(
            self.state,
            State::Backoff { .. } | State::AuthBlocked { .. }
        )
    }

    /// An auth failure on the key values fingerprinted `key`: a value other than
    /// the one the count is about starts the count over.
    fn count_rejected(&mut self, key: Option<u64>) {
        if self.rejected != Some(key) {
            self.rejected = Some(key);
            self.auth_streak = 0;
        }
    }

    fn reset_counters(&mut self) {
        self.crash_streak = 0;
        self.backoff_n = 0;
        self.auth_streak = 0;
        self.rejected = None;
        self.reread_pending = None;
        self.stop_pending = None;
        self.restart_pending = false;
        self.restart_after_stop = false;
        self.kill_sent = false;
    }

    /// Enters `to` and logs the transition: every transition is a log event (SPEC 5).
    fn go(&mut self, to: State, note: Note, out: &mut Vec<Action>) {
        if !matches!(to, State::Stopping { .. }) {
            self.kill_sent = false;
        }
        out.push(Action::Log(Transition {
            worker: self.worker.clone(),
            replica: self.index,
            from: self.state.kind(),
            to: to.kind(),
            pid: note.pid,
            status: note.status,
            class: note.class,
            delay: note.delay,
            reason: note.reason,
        }));
        self.state = to;
    }
}

/// The parts of a [`Transition`] a step knows, gathered before it picks the state.
struct Note {
    reason: String,
    pid: Option<i32>,
    status: Option<Termination>,
    class: Option<ExitClass>,
    delay: Option<Duration>,
}

impl Note {
    fn new(reason: impl Into<String>) -> Self {
        Note {
            reason: reason.into(),
            pid: None,
            status: None,
            class: None,
            delay: None,
        }
    }

    fn pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }

    fn exit(mut self, status: Termination, class: ExitClass) -> Self {
        self.status = Some(status);
        self.class = Some(class);
        self
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Appends "; why" to the reason.
    fn because(mut self, why: &str) -> Self {
        if self.reason.is_empty() {
            self.reason = why.to_owned();
        } else {
            self.reason = format!("{}; {why}", self.reason);
        }
        self
    }
}

/// Millisecond precision is plenty for a log line, and keeps jittered delays short.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The delay before restart number `attempt + 1` of a streak (SPEC 5):
/// `initial × multiplier^attempt`, capped at `max`, then spread by
/// `± jitter × jitter_sample` (`jitter_sample` in `[-1, 1]`), and never above `max`:
/// at the cap the spread is only downwards, which still de-synchronises a fleet
/// while keeping `max` (and `auth.max_delay`) a real ceiling.
pub(crate) fn backoff_delay(backoff: &Backoff, attempt: u32, jitter_sample: f64) -> Duration {
    let max = backoff.max.as_secs_f64();
    let initial = backoff.initial.as_secs_f64();
    let multiplier = if backoff.multiplier.is_finite() && backoff.multiplier >= 1.0 {
        backoff.multiplier
    } else {
        1.0
    };
    let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
    let base = if initial == 0.0 {
        0.0
    } else {
        (initial * multiplier.powi(exponent)).min(max)
    };
    let jitter = if backoff.jitter.is_finite() {
        backoff.jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let sample = if jitter_sample.is_finite() {
        jitter_sample.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let secs = (base * (1.0 + jitter * sample)).clamp(0.0, max);
    Duration::try_from_secs_f64(secs).unwrap_or(backoff.max)
}

#[cfg(test)]
mod tests;
