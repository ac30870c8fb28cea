//! The fleet's vocabulary: its configuration, the events it takes and the actions
//! it returns. Both enums are meant to grow (a new input, a new effect).

use std::time::{Duration, Instant};

use super::{ReplyId, SlotId};
use crate::auth::{ExitClass, Termination};
use crate::config::{OnGiveUp, OnRotation};
use crate::replica::{Policy, StopSignal, Transition};
use crate::signals::SignalEvent;
use crate::status::{ControlRequest, ControlResponse};

/// One worker, as the fleet needs it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    /// Its name.
    pub name: String,
    /// How many replicas.
    pub replicas: u32,
    /// Its replicas' restart, backoff and stop policy.
    pub policy: Policy,
    /// `on_rotation`: whether its running replicas restart when a watched change
    /// or a refresh changed their keys (`restart`), only on a reload
    /// (`next-start`), or never (`file`, `signal`: the values change in place).
    pub on_rotation: OnRotation,
    /// With a `ready` probe: how long a new run may take to pass it, and the
    /// probe as the log names it (`http http://127.0.0.1:8080/health`).
    pub ready: Option<(Duration, String)>,
}

/// The fleet's configuration, from the plan.
#[derive(Debug, Clone)]
pub(crate) struct FleetConfig {
    /// The workers, in config order.
    pub workers: Vec<WorkerSpec>,
    /// `[supervisor] on_give_up`.
    pub on_give_up: OnGiveUp,
    /// `[supervisor] shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// The config has a `command` source: re-reads cost a call to a secret store,
    /// so two re-reads start at least [`super::REREAD_MIN_INTERVAL`] apart.
    pub paced_rereads: bool,
    /// The config file, for `status`.
    pub config_path: String,
    /// agentsup's pid, for `status`.
    pub pid: u32,
}

/// A declared key of one replica whose value differs from what its current run got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyChange {
    /// The key's name.
    pub key: String,
    /// Where the new value comes from (or `removed from every source`); never a value.
    pub source: String,
}

/// A timer the fleet asked for; it comes back as [`Event::Timer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A replica's own timer (backoff, stop deadline); stale generations are ignored.
    Replica {
        /// Which replica.
        slot: SlotId,
        /// Which of its timers.
        generation: u64,
    },
    /// A re-read's result for one replica, delivered late to spread a fleet's
    /// restarts on one rotation.
    RereadDone {
        /// Which replica.
        slot: SlotId,
        /// Its changed keys (names only).
        changed_keys: Vec<String>,
    },
    /// Automatic re-reads were held after a failed one; the hold is over.
    RereadHoldOver,
    /// The minimum pause between two re-reads is over.
    RereadPaceOver,
    /// 90 % of `shutdown_timeout` after the first stop signal: kill what is left.
    ShutdownDeadline,
    /// Ignored signals whose sender is not known yet waited long enough.
    UnplacedSignals,
    /// A run's `ready` timeout is over.
    ReadyTimeout {
        /// Which replica.
        slot: SlotId,
        /// Which of its runs.
        run: u64,
    },
}

/// Everything that can happen to the fleet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Start every replica (once, after start-up).
    Start,
    /// A signal to agentsup.
    Signal(SignalEvent),
    /// The process of [`Action::Spawn`] exists.
    Spawned {
        /// Which replica.
        slot: SlotId,
        /// Which of its runs.
        run: u64,
        /// Its pid (and process group).
        pid: u32,
    },
    /// [`Action::Spawn`] failed before a process existed.
    SpawnFailed {
        /// Which replica.
        slot: SlotId,
        /// Which of its runs.
        run: u64,
        /// Why, without values.
        reason: String,
    },
    /// A run ended, its output drained, and it was classified.
    Exited {
        /// Which replica.
        slot: SlotId,
        /// Which of its runs.
        run: u64,
        /// How it ended.
        status: Termination,
        /// Its class.
        class: ExitClass,
        /// The classification's reason (safe to log).
        reason: String,
        /// Processes outside its group held its output open and were killed.
        leaked: bool,
        /// A fingerprint of the values of the keys the run was given (never the
        /// values): auth failures are counted per rejected value.
        key: Option<u64>,
    },
    /// A timer armed by [`Action::ArmTimer`] is due.
    Timer(Timer),
    /// A run's `ready` probe passed.
    Ready {
        /// Which replica.
        slot: SlotId,
        /// Which of its runs.
        run: u64,
    },
    /// A re-read asked for by [`Action::Reread`] finished: for every slot, its
    /// changed keys, or why the new values were refused.
    RereadFinished(Result<Vec<Vec<KeyChange>>, String>),
    /// A watched source changed (debounced).
    SourcesChanged,
    /// `command` sources are due for their refresh (`refresh`, `ttl_pointer`):
    /// re-read, and roll changes out as a watched change's.
    Refresh {
        /// What is refreshed, for the log (source numbers and programs).
        sources: Vec<String>,
    },
    /// A request on the control socket.
    Control {
        /// Who to answer.
        reply: ReplyId,
        /// What was asked.
        request: ControlRequest,
    },
}

/// How loud a [`Action::Log`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Routine.
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
}

/// What the dispatcher must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Build the replica's environment from the current snapshot and start run
    /// `run`; report [`Event::Spawned`] or [`Event::SpawnFailed`], then
    /// [`Event::Exited`].
    Spawn {
        /// Which replica.
        slot: SlotId,
        /// The run's number.
        run: u64,
    },
    /// Send the worker's stop signal (or SIGKILL) to a replica's process group.
    Signal {
        /// Which replica (for its worker's `stop_signal` and `stop_target`).
        slot: SlotId,
        /// The process group.
        group: i32,
        /// Which signal.
        sig: StopSignal,
    },
    /// Deliver [`Event::Timer`] at (or after) `at`.
    ArmTimer {
        /// When.
        at: Instant,
        /// What.
        timer: Timer,
    },
    /// Re-read and re-check every source; report [`Event::RereadFinished`].
    Reread,
    /// Log one replica transition.
    Transition(Transition),
    /// Log one supervisor line.
    Log {
        /// How loud.
        level: Level,
        /// The line (names, states and counts only).
        message: String,
    },
    /// Answer a control request.
    Reply {
        /// Who.
        to: ReplyId,
        /// The answer.
        response: ControlResponse,
    },
    /// A stop of everything began: tell systemd, and stop waiting on stdout at
    /// `output_deadline`.
    BeginShutdown {
        /// When output stops being waited for.
        output_deadline: Instant,
    },
    /// A re-read finished (values adopted or refused): feed the refresh schedule.
    RereadOutcome {
        /// The values were adopted.
        accepted: bool,
        /// Why not (value-free).
        why: Option<String>,
    },
    /// The values were adopted: bring the key files of `file`/`signal` workers up
    /// to date (and signal `signal` workers' running replicas). Comes before any
    /// spawn of the same step.
    ApplyInPlace,
    /// Kill every descendant that left its worker's group (the shutdown deadline).
    Sweep,
}
