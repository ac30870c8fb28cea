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

    /// The one readiness rule (SPEC 8): only a running process counts towards
    /// `/readyz`.
    pub(crate) fn is_ready(self) -> bool {
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

/// The state's name in logs, `status` and metrics (SPEC 5).
pub(crate) fn label(state: &State) -> &'static str {
    state.kind().as_str()
}

/// True when the replica counts towards `/readyz` ([`StateKind::is_ready`]).
#[cfg(test)]
pub(crate) fn is_ready(state: &State) -> bool {
    state.kind().is_ready()
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(label(self))
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
mod tests {
    use super::*;

    const PID: i32 = 4242;

    fn policy() -> Policy {
        Policy {
            restart: RestartPolicy::OnFailure,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: 0.0,
                reset_after: Duration::from_secs(30),
            },
            max_restarts: 3,
            auth_max_delay: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(10),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn exited(class: ExitClass, at: Instant) -> Event {
        let status = match class {
            ExitClass::Ok => Termination::Exited(0),
            _ => Termination::Exited(1),
        };
        Event::Exited {
            status,
            class,
            reason: format!("test {class}"),
            key: Some(1),
            at,
        }
    }

    /// A compact, comparable rendering of actions for the transition table.
    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Spawn => "spawn".to_owned(),
                Action::Signal { group, sig } => format!("signal {sig:?} {group}"),
                Action::ArmTimer { .. } => "timer".to_owned(),
                Action::RereadSources => "reread".to_owned(),
                Action::Log(t) => format!("log {}->{}", t.from, t.to),
                Action::GiveUp => "give-up".to_owned(),
            })
            .collect()
    }

    fn replica_in(state: State) -> Replica {
        let mut r = Replica::new("planner", 0);
        r.state = state;
        r
    }

    /// Every (state, event) pair that does something, and a few that must not.
    #[test]
    fn transition_table() {
        let t0 = Instant::now();
        let running = State::Running {
            pid: PID,
            since: t0,
        };
        let stopping = State::Stopping {
            pid: PID,
            deadline: secs(t0, 10),
        };
        let backoff = State::Backoff {
            until: secs(t0, 5),
            attempt: 1,
        };
        let blocked = State::AuthBlocked { until: secs(t0, 5) };
        let failed = State::Failed { reason: "x".into() };
        let at = secs(t0, 1);
        #[rustfmt::skip]
        let table: Vec<(&str, State, Event, &str, Vec<&str>)> = vec![
            ("start", State::Stopped, Event::Start, "starting", vec!["log stopped->starting", "spawn"]),
            ("start after exit", State::Exited, Event::Start, "starting", vec!["log exited->starting", "spawn"]),
            ("start while running", running.clone(), Event::Start, "running", vec![]),
            ("spawned", State::Starting, Event::Spawned { pid: PID, at }, "running", vec!["log starting->running"]),
            ("spawn failed", State::Starting, Event::SpawnFailed { reason: "ENOENT".into(), at }, "backoff", vec!["log starting->backoff", "timer"]),
            ("crash", running.clone(), exited(ExitClass::Crash, at), "backoff", vec!["log running->backoff", "timer"]),
            ("auth", running.clone(), exited(ExitClass::Auth, at), "backoff", vec!["log running->backoff", "reread"]),
            ("config", running.clone(), exited(ExitClass::Config, at), "failed", vec!["log running->failed", "give-up"]),
            ("ok, on-failure", running.clone(), exited(ExitClass::Ok, at), "exited", vec!["log running->exited"]),
            ("exit while stopping", stopping.clone(), exited(ExitClass::Ok, at), "stopped", vec!["log stopping->stopped"]),
            ("stale exit", backoff.clone(), exited(ExitClass::Crash, at), "backoff", vec![]),
            ("stop running", running.clone(), Event::StopRequested { at }, "stopping", vec!["log running->stopping", "signal Stop 4242", "timer"]),
            ("stop timeout", stopping.clone(), Event::TimerFired { at: secs(t0, 10) }, "stopping", vec!["log stopping->stopping", "signal Kill 4242"]),
            ("early stop timer", stopping.clone(), Event::TimerFired { at: secs(t0, 9) }, "stopping", vec![]),
            ("second stop", stopping.clone(), Event::StopRequested { at }, "stopping", vec![]),
            ("force kill stopping", stopping.clone(), Event::ForceKill { at }, "stopping", vec!["log stopping->stopping", "signal Kill 4242"]),
            ("force kill running", running.clone(), Event::ForceKill { at }, "stopping", vec!["log running->stopping", "signal Kill 4242"]),
            ("stop in backoff", backoff.clone(), Event::StopRequested { at }, "stopped", vec!["log backoff->stopped"]),
            ("stop auth-blocked", blocked.clone(), Event::StopRequested { at }, "stopped", vec!["log auth-blocked->stopped"]),
            ("stop failed", failed.clone(), Event::StopRequested { at }, "failed", vec![]),
            ("stop starting", State::Starting, Event::StopRequested { at }, "starting", vec![]),
            ("backoff elapsed", backoff.clone(), Event::TimerFired { at: secs(t0, 5) }, "starting", vec!["log backoff->starting", "spawn"]),
            ("early backoff timer", backoff.clone(), Event::TimerFired { at: secs(t0, 4) }, "backoff", vec![]),
            ("auth-blocked elapsed", blocked.clone(), Event::TimerFired { at: secs(t0, 5) }, "starting", vec!["log auth-blocked->starting", "spawn"]),
            ("source change, blocked", blocked.clone(), Event::SourcesChanged, "starting", vec!["log auth-blocked->starting", "spawn"]),
            ("source change, backoff", backoff.clone(), Event::SourcesChanged, "starting", vec!["log backoff->starting", "spawn"]),
            ("source change, running", running.clone(), Event::SourcesChanged, "running", vec![]),
            ("source change, failed", failed.clone(), Event::SourcesChanged, "failed", vec![]),
            ("rotation seen by a waiting replica", blocked.clone(), Event::RereadDone { changed_keys: vec!["K".into()], at }, "starting", vec!["log auth-blocked->starting", "spawn"]),
            ("no change seen by a waiting replica", backoff.clone(), Event::RereadDone { changed_keys: vec![], at }, "backoff", vec![]),
            ("restart running", running.clone(), Event::RestartRequested { at }, "stopping", vec!["log running->stopping", "signal Stop 4242", "timer"]),
            ("restart backoff", backoff.clone(), Event::RestartRequested { at }, "starting", vec!["log backoff->starting", "spawn"]),
            ("restart failed", failed.clone(), Event::RestartRequested { at }, "starting", vec!["log failed->starting", "spawn"]),
            ("restart stopped", State::Stopped, Event::RestartRequested { at }, "starting", vec!["log stopped->starting", "spawn"]),
            ("restart starting", State::Starting, Event::RestartRequested { at }, "starting", vec![]),
            ("late spawned", running.clone(), Event::Spawned { pid: 1, at }, "running", vec![]),
            ("exit before spawned", State::Starting, exited(ExitClass::Crash, at), "backoff", vec!["log starting->backoff", "timer"]),
        ];
        for (name, state, event, to, actions) in table {
            let mut r = replica_in(state);
            let got = r.step(&policy(), event, 0.0);
            assert_eq!(label(r.state()), to, "{name}");
            assert_eq!(kinds(&got), actions, "{name}");
        }
    }

    #[test]
    fn restart_policies() {
        let t0 = Instant::now();
        #[rustfmt::skip]
        let table = [
            (RestartPolicy::Always, ExitClass::Ok, "backoff"),
            (RestartPolicy::Always, ExitClass::Crash, "backoff"),
            (RestartPolicy::Always, ExitClass::Auth, "backoff"),
            (RestartPolicy::Always, ExitClass::Config, "failed"),
            (RestartPolicy::OnFailure, ExitClass::Ok, "exited"),
            (RestartPolicy::OnFailure, ExitClass::Crash, "backoff"),
            (RestartPolicy::OnFailure, ExitClass::Auth, "backoff"),
            (RestartPolicy::OnFailure, ExitClass::Config, "failed"),
            (RestartPolicy::Never, ExitClass::Ok, "exited"),
            (RestartPolicy::Never, ExitClass::Crash, "failed"),
            (RestartPolicy::Never, ExitClass::Auth, "failed"),
            (RestartPolicy::Never, ExitClass::Config, "failed"),
        ];
        for (restart, class, to) in table {
            let policy = Policy {
                restart,
                ..policy()
            };
            let mut r = replica_in(State::Running {
                pid: PID,
                since: t0,
            });
            let actions = r.step(&policy, exited(class, secs(t0, 1)), 0.0);
            assert_eq!(label(r.state()), to, "{restart:?} {class}");
            assert_eq!(
                actions.contains(&Action::GiveUp),
                to == "failed",
                "{restart:?} {class}"
            );
        }
    }

    #[test]
    fn transitions_carry_worker_replica_pid_status_and_reason() {
        let t0 = Instant::now();
        let mut r = Replica::new("planner", 3);
        r.state = State::Running {
            pid: PID,
            since: t0,
        };
        let actions = r.step(&policy(), exited(ExitClass::Crash, secs(t0, 1)), 0.0);
        let Action::Log(t) = &actions[0] else {
            panic!("first action is the log: {actions:?}")
        };
        assert_eq!(t.worker, "planner");
        assert_eq!(t.replica, 3);
        assert_eq!(t.pid, Some(PID));
        assert_eq!(t.status, Some(Termination::Exited(1)));
        assert_eq!(t.class, Some(ExitClass::Crash));
        assert_eq!(t.delay, Some(Duration::from_secs(1)));
        assert!(
            t.reason.starts_with("test crash; restart 1 in 1s"),
            "{}",
            t.reason
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = policy().backoff;
        let got: Vec<u64> = (0..9)
            .map(|n| backoff_delay(&b, n, 0.0).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_delay(&b, u32::MAX, 0.0), Duration::from_secs(60));
    }

    #[test]
    fn backoff_jitter_spreads_but_never_exceeds_max() {
        let b = Backoff {
            jitter: 0.1,
            ..policy().backoff
        };
        assert_eq!(backoff_delay(&b, 2, 1.0), Duration::from_millis(4400));
        assert_eq!(backoff_delay(&b, 2, -1.0), Duration::from_millis(3600));
        assert_eq!(backoff_delay(&b, 20, 1.0), Duration::from_secs(60));
        assert_eq!(backoff_delay(&b, 20, -1.0), Duration::from_secs(54));
        // Out-of-range inputs are clamped rather than trusted.
        assert_eq!(backoff_delay(&b, 2, 7.0), Duration::from_millis(4400));
        assert_eq!(backoff_delay(&b, 2, f64::NAN), Duration::from_secs(4));
        let odd = Backoff {
            multiplier: f64::NAN,
            jitter: 5.0,
            ..b
        };
        assert_eq!(backoff_delay(&odd, 3, 0.5), Duration::from_millis(1500));
        let zero = Backoff {
            initial: Duration::ZERO,
            ..b
        };
        assert_eq!(backoff_delay(&zero, 100, 1.0), Duration::ZERO);
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 0..50 {
            let d = backoff_delay(&b, n, rng.f64() * 2.0 - 1.0);
            assert!(d <= b.max, "{d:?}");
        }
    }

    /// Drives crash → backoff → timer → spawn → crash … and returns the delays.
    fn crash_loop(
        r: &mut Replica,
        policy: &Policy,
        t: &mut Instant,
        runs: usize,
        run_for: Duration,
    ) -> Vec<Option<Duration>> {
        let mut delays = Vec::new();
        for _ in 0..runs {
            r.step(policy, Event::Spawned { pid: PID, at: *t }, 0.0);
            *t += run_for;
            let actions = r.step(policy, exited(ExitClass::Crash, *t), 0.0);
            delays.push(actions.iter().find_map(|a| match a {
                Action::Log(tr) => tr.delay,
                _ => None,
            }));
            if let State::Backoff { until, .. } = *r.state() {
                *t = until;
                r.step(policy, Event::TimerFired { at: *t }, 0.0);
            }
        }
        delays
    }

    #[test]
    fn gives_up_after_max_restarts_consecutive_crashes() {
        let policy = Policy {
            max_restarts: 4,
            ..policy()
        };
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        let delays = crash_loop(&mut r, &policy, &mut t, 4, Duration::from_millis(100));
        assert_eq!(
            delays,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                None
            ]
        );
        assert_eq!(label(r.state()), "failed");
        let State::Failed { reason } = r.state() else {
            unreachable!()
        };
        assert!(
            reason.contains("4 consecutive crash-class runs"),
            "{reason}"
        );
    }

    #[test]
    fn max_restarts_zero_means_no_limit() {
        let policy = Policy {
            max_restarts: 0,
            ..policy()
        };
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        crash_loop(&mut r, &policy, &mut t, 50, Duration::from_millis(100));
        assert_eq!(label(r.state()), "starting");
    }

    #[test]
    fn a_long_run_resets_backoff_and_the_give_up_count() {
        let policy = policy(); // max_restarts = 3
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        let short = Duration::from_millis(100);
        assert_eq!(crash_loop(&mut r, &policy, &mut t, 2, short).len(), 2);
        assert_eq!(r.crash_streak(), 2);
        // This run lasts reset_after: the streak starts over at `initial`.
        let delays = crash_loop(&mut r, &policy, &mut t, 1, policy.backoff.reset_after);
        assert_eq!(delays, [Some(Duration::from_secs(1))]);
        assert_eq!(r.crash_streak(), 1);
        let delays = crash_loop(&mut r, &policy, &mut t, 2, short);
        assert_eq!(delays, [Some(Duration::from_secs(2)), None]);
        assert_eq!(label(r.state()), "failed");
    }

    #[test]
    fn an_ok_or_auth_run_breaks_the_crash_streak() {
        let policy = Policy {
            restart: RestartPolicy::Always,
            ..policy()
        };
        let t0 = Instant::now();
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        r.crash_streak = 2;
        r.step(&policy, exited(ExitClass::Ok, secs(t0, 1)), 0.0);
        assert_eq!(r.crash_streak(), 0);
        assert_eq!(label(r.state()), "backoff");
    }

    /// Runs one auth failure with unchanged sources; returns the new state's label
    /// and the delay logged.
    fn auth_failure(r: &mut Replica, policy: &Policy, t: &mut Instant) -> (&'static str, Duration) {
        r.step(policy, Event::Spawned { pid: PID, at: *t }, 0.0);
        *t += Duration::from_millis(300);
        let actions = r.step(policy, exited(ExitClass::Auth, *t), 0.0);
        assert_eq!(kinds(&actions), ["log running->backoff", "reread"]);
        assert!(r.reread_pending());
        // Until the re-read is done, no timer may restart it.
        assert!(
            r.step(
                policy,
                Event::TimerFired {
                    at: *t + Duration::from_secs(999)
                },
                0.0
            )
            .is_empty()
        );
        let actions = r.step(
            policy,
            Event::RereadDone {
                changed_keys: vec![],
                at: *t,
            },
            0.0,
        );
        let Action::Log(tr) = &actions[0] else {
            panic!("{actions:?}")
        };
        let Action::ArmTimer { at } = actions[1] else {
            panic!("{actions:?}")
        };
        let delay = tr.delay.expect("delay logged");
        assert_eq!(at, *t + delay);
        *t = at;
        let label = label(r.state());
        assert_eq!(
            kinds(&r.step(policy, Event::TimerFired { at: *t }, 0.0))
                .last()
                .map(String::as_str),
            Some("spawn")
        );
        (label, delay)
    }

    #[test]
    fn unchanged_auth_failures_back_off_then_block_and_never_give_up() {
        let policy = Policy {
            max_restarts: 1,
            auth_max_delay: Duration::from_secs(10),
            ..policy()
        };
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        let got: Vec<(&str, u64)> = (0..7)
            .map(|_| {
                let (label, d) = auth_failure(&mut r, &policy, &mut t);
                (label, d.as_secs())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("backoff", 1),
                ("backoff", 2),
                ("auth-blocked", 4),
                ("auth-blocked", 8),
                ("auth-blocked", 10),
                ("auth-blocked", 10),
                ("auth-blocked", 10),
            ]
        );
        assert_eq!(r.auth_streak(), 7);
        assert!(!is_ready(&State::AuthBlocked { until: t }));
    }

    /// One auth failure after a run of `run`, on key values `key`, with the sources
    /// unchanged; returns the state entered.
    fn auth_failure_after(
        r: &mut Replica,
        policy: &Policy,
        t: &mut Instant,
        run: Duration,
        key: u64,
    ) -> &'static str {
        r.step(policy, Event::Spawned { pid: PID, at: *t }, 0.0);
        *t += run;
        let exit = Event::Exited {
            status: Termination::Exited(77),
            class: ExitClass::Auth,
            reason: "exit status 77".into(),
            key: Some(key),
            at: *t,
        };
        r.step(policy, exit, 0.0);
        let done = Event::RereadDone {
            changed_keys: vec![],
            at: *t,
        };
        let actions = r.step(policy, done, 0.0);
        let Some(Action::ArmTimer { at }) = actions.last() else {
            panic!("{actions:?}")
        };
        *t = *at;
        r.step(policy, Event::TimerFired { at: *t }, 0.0);
        label(r.state())
    }

    #[test]
    fn auth_failures_count_per_rejected_value_however_long_the_runs_between() {
        // A queue worker idles between tasks: every run outlasts reset_after.
        let policy = Policy {
            backoff: Backoff {
                reset_after: Duration::from_secs(4),
                ..policy().backoff
            },
            ..policy()
        };
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        let seven = Duration::from_secs(7);
        let got: Vec<&str> = (0..3)
            .map(|_| auth_failure_after(&mut r, &policy, &mut t, seven, 1))
            .collect();
        // Each entry is the state the failure led to, observed after its restart.
        assert_eq!(r.auth_streak(), 3, "{got:?}");
        // A crash between failures on the same value does not start the count over.
        r.step(&policy, Event::Spawned { pid: PID, at: t }, 0.0);
        r.step(&policy, exited(ExitClass::Crash, t + seven), 0.0);
        assert_eq!(r.auth_streak(), 3);
        // A different value is a new credential: its count starts at one.
        t += Duration::from_secs(60);
        r.step(&policy, Event::TimerFired { at: t }, 0.0);
        auth_failure_after(&mut r, &policy, &mut t, seven, 2);
        assert_eq!(r.auth_streak(), 1);
    }

    #[test]
    fn a_revoked_key_on_a_quiet_queue_is_auth_blocked_on_the_third_failure() {
        let policy = Policy {
            backoff: Backoff {
                reset_after: Duration::from_secs(4),
                ..policy().backoff
            },
            ..policy()
        };
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        let mut states = Vec::new();
        for _ in 0..3 {
            r.step(&policy, Event::Spawned { pid: PID, at: t }, 0.0);
            t += Duration::from_secs(7);
            let exit = Event::Exited {
                status: Termination::Exited(77),
                class: ExitClass::Auth,
                reason: "exit status 77".into(),
                key: Some(9),
                at: t,
            };
            r.step(&policy, exit, 0.0);
            let done = Event::RereadDone {
                changed_keys: vec![],
                at: t,
            };
            let actions = r.step(&policy, done, 0.0);
            states.push(label(r.state()));
            let Some(Action::ArmTimer { at }) = actions.last() else {
                panic!("{actions:?}")
            };
            t = *at;
            r.step(&policy, Event::TimerFired { at: t }, 0.0);
        }
        assert_eq!(states, ["backoff", "backoff", "auth-blocked"]);
    }

    #[test]
    fn rotation_restarts_at_once_and_names_the_keys() {
        let policy = policy();
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        for _ in 0..3 {
            auth_failure(&mut r, &policy, &mut t);
        }
        r.step(&policy, Event::Spawned { pid: PID, at: t }, 0.0);
        r.step(&policy, exited(ExitClass::Auth, t), 0.0);
        let actions = r.step(
            &policy,
            Event::RereadDone {
                changed_keys: vec!["OPENAI_API_KEY".into()],
                at: t,
            },
            0.0,
        );
        assert_eq!(kinds(&actions), ["log backoff->starting", "spawn"]);
        let Action::Log(tr) = &actions[0] else {
            unreachable!()
        };
        assert!(
            tr.reason.contains("OPENAI_API_KEY changed"),
            "{}",
            tr.reason
        );
        assert_eq!(r.auth_streak(), 0);
    }

    #[test]
    fn source_change_unblocks_an_auth_blocked_replica() {
        let policy = policy();
        let mut t = Instant::now();
        let mut r = replica_in(State::Starting);
        for _ in 0..3 {
            auth_failure(&mut r, &policy, &mut t);
        }
        r.step(&policy, Event::Spawned { pid: PID, at: t }, 0.0);
        r.step(&policy, exited(ExitClass::Auth, t), 0.0);
        r.step(
            &policy,
            Event::RereadDone {
                changed_keys: vec![],
                at: t,
            },
            0.0,
        );
        assert_eq!(label(r.state()), "auth-blocked");
        let actions = r.step(&policy, Event::SourcesChanged, 0.0);
        assert_eq!(kinds(&actions), ["log auth-blocked->starting", "spawn"]);
        // The timer armed for the old deadline is now stale.
        r.step(&policy, Event::Spawned { pid: PID, at: t }, 0.0);
        assert!(
            r.step(
                &policy,
                Event::TimerFired {
                    at: t + Duration::from_secs(999)
                },
                0.0
            )
            .is_empty()
        );
    }

    #[test]
    fn source_change_during_a_pending_reread_waits_for_the_reread() {
        let t0 = Instant::now();
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        r.step(&policy(), exited(ExitClass::Auth, t0), 0.0);
        assert!(r.step(&policy(), Event::SourcesChanged, 0.0).is_empty());
        assert!(r.reread_pending());
    }

    #[test]
    fn stop_during_a_pending_reread_ignores_its_result() {
        let t0 = Instant::now();
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        r.step(&policy(), exited(ExitClass::Auth, t0), 0.0);
        r.step(&policy(), Event::StopRequested { at: t0 }, 0.0);
        let changed = Event::RereadDone {
            changed_keys: vec!["K".into()],
            at: t0,
        };
        assert!(r.step(&policy(), changed, 0.0).is_empty());
        assert_eq!(*r.state(), State::Stopped);
    }

    #[test]
    fn stop_while_starting_applies_once_spawned() {
        let t0 = Instant::now();
        let mut r = replica_in(State::Starting);
        r.step(&policy(), Event::StopRequested { at: t0 }, 0.0);
        let actions = r.step(&policy(), Event::Spawned { pid: PID, at: t0 }, 0.0);
        assert_eq!(
            kinds(&actions),
            [
                "log starting->running",
                "log running->stopping",
                "signal Stop 4242",
                "timer"
            ]
        );
        let mut r = replica_in(State::Starting);
        r.step(&policy(), Event::ForceKill { at: t0 }, 0.0);
        let actions = r.step(
            &policy(),
            Event::SpawnFailed {
                reason: "x".into(),
                at: t0,
            },
            0.0,
        );
        assert_eq!(kinds(&actions), ["log starting->stopped"]);
    }

    #[test]
    fn stop_sequence_term_then_kill_then_stopped() {
        let t0 = Instant::now();
        let p = policy();
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        let actions = r.step(&p, Event::StopRequested { at: t0 }, 0.0);
        assert!(actions.contains(&Action::ArmTimer {
            at: t0 + p.stop_timeout
        }));
        let kill = r.step(
            &p,
            Event::TimerFired {
                at: t0 + p.stop_timeout,
            },
            0.0,
        );
        assert_eq!(kinds(&kill), ["log stopping->stopping", "signal Kill 4242"]);
        // A repeated timer does not log or kill again.
        assert!(
            r.step(
                &p,
                Event::TimerFired {
                    at: t0 + p.stop_timeout
                },
                0.0
            )
            .is_empty()
        );
        let done = Event::Exited {
            status: Termination::Signaled(9),
            class: ExitClass::Ok,
            reason: "stopped".into(),
            key: None,
            at: t0 + p.stop_timeout,
        };
        assert_eq!(kinds(&r.step(&p, done, 0.0)), ["log stopping->stopped"]);
        assert_eq!(*r.state(), State::Stopped);
    }

    #[test]
    fn requested_restart_stops_then_starts() {
        let t0 = Instant::now();
        let p = policy();
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        r.crash_streak = 2;
        r.step(&p, Event::RestartRequested { at: t0 }, 0.0);
        let actions = r.step(&p, exited(ExitClass::Ok, secs(t0, 1)), 0.0);
        assert_eq!(kinds(&actions), ["log stopping->starting", "spawn"]);
        // A stop arriving meanwhile wins over the restart.
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        r.step(&p, Event::RestartRequested { at: t0 }, 0.0);
        r.step(&p, Event::StopRequested { at: t0 }, 0.0);
        let actions = r.step(&p, exited(ExitClass::Ok, secs(t0, 1)), 0.0);
        assert_eq!(kinds(&actions), ["log stopping->stopped"]);
    }

    #[test]
    fn config_fails_at_once_with_its_reason() {
        let t0 = Instant::now();
        let policy = Policy {
            restart: RestartPolicy::Always,
            max_restarts: 0,
            ..policy()
        };
        let mut r = replica_in(State::Running {
            pid: PID,
            since: t0,
        });
        let event = Event::Exited {
            status: Termination::Exited(1),
            class: ExitClass::Config,
            reason: "matched `Missing credentials. Please pass` (OpenAI SDK)".into(),
            key: None,
            at: t0,
        };
        let actions = r.step(&policy, event, 0.0);
        assert_eq!(kinds(&actions), ["log running->failed", "give-up"]);
        let State::Failed { reason } = r.state() else {
            panic!()
        };
        assert!(
            reason.contains("Missing credentials") && reason.contains("restarting cannot help")
        );
        assert_eq!(
            reason.matches("restarting cannot help").count(),
            1,
            "{reason}"
        );
    }

    #[test]
    fn labels_and_readiness() {
        let t0 = Instant::now();
        let all = [
            (State::Starting, "starting", false),
            (State::Running { pid: 1, since: t0 }, "running", true),
            (
                State::Stopping {
                    pid: 1,
                    deadline: t0,
                },
                "stopping",
                false,
            ),
            (
                State::Backoff {
                    until: t0,
                    attempt: 1,
                },
                "backoff",
                false,
            ),
            (State::AuthBlocked { until: t0 }, "auth-blocked", false),
            (
                State::Failed {
                    reason: String::new(),
                },
                "failed",
                false,
            ),
            (State::Stopped, "stopped", false),
            (State::Exited, "exited", false),
        ];
        for (state, name, ready) in all {
            assert_eq!(label(&state), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(is_ready(&state), ready, "{name}");
        }
    }

    #[test]
    fn a_restart_that_meets_a_starting_replica_is_applied_once_it_is_up() {
        let p = policy();
        let t0 = Instant::now();
        let mut r = replica_in(State::Starting);
        let acts = r.step(&p, Event::RestartRequested { at: t0 }, 0.0);
        assert!(kinds(&acts).is_empty(), "nothing to signal yet: {acts:?}");
        assert!(r.restart_pending());
        let acts = r.step(&p, Event::Spawned { pid: PID, at: t0 }, 0.0);
        assert_eq!(
            kinds(&acts),
            [
                "log starting->running",
                "log running->stopping",
                "signal Stop 4242",
                "timer"
            ]
        );
        assert!(!r.restart_pending());
        // The stop completes and the replica starts again, on the new environment.
        let acts = r.step(&p, exited(ExitClass::Crash, secs(t0, 1)), 0.0);
        assert_eq!(label(r.state()), "starting", "{acts:?}");
        assert!(kinds(&acts).contains(&"spawn".to_owned()));
    }

    #[test]
    fn a_stop_wins_over_a_pending_restart_and_a_failed_spawn_drops_it() {
        let p = policy();
        let t0 = Instant::now();
        let mut r = replica_in(State::Starting);
        r.step(&p, Event::RestartRequested { at: t0 }, 0.0);
        r.step(&p, Event::StopRequested { at: t0 }, 0.0);
        let acts = r.step(&p, Event::Spawned { pid: PID, at: t0 }, 0.0);
        assert_eq!(
            kinds(&acts),
            [
                "log starting->running",
                "log running->stopping",
                "signal Stop 4242",
                "timer"
            ]
        );
        r.step(&p, exited(ExitClass::Ok, secs(t0, 1)), 0.0);
        assert_eq!(label(r.state()), "stopped");

        let mut r = replica_in(State::Starting);
        r.step(&p, Event::RestartRequested { at: t0 }, 0.0);
        r.step(
            &p,
            Event::SpawnFailed {
                reason: "EAGAIN".into(),
                at: t0,
            },
            0.0,
        );
        assert!(!r.restart_pending());
        assert_eq!(label(r.state()), "backoff");
    }
}
