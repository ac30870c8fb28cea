//! The fleet as a pure function: every replica of every worker, and everything
//! that decides across replicas.
//!
//! [`Fleet::step`] takes one [`Event`] (a signal, a run that started or exited, a
//! timer, a finished re-read, a watched source that changed, a control request)
//! with the current time and a random source, and returns the [`Action`]s the
//! dispatcher (`crate::supervisor`) must perform: spawn, signal, arm a timer,
//! re-read the sources, log, reply. It never spawns, signals, sleeps, reads a clock
//! or draws from a global random source, so every fleet-level behaviour is
//! testable with plain values (STYLE §7), the way [`crate::replica`] is for one
//! replica.
//!
//! The fleet owns: the replicas ([`crate::replica::Replica`], fed with the events
//! that concern them), which run of a replica is current, the re-read coordinator
//! and its pacers (`reread.rs`, `pacer.rs`), the one-at-a-time restart queue
//! (`rolling.rs`), the spread of a rotation's restarts, the control requests
//! (`control.rs`), the signals and the shutdown count (`signals.rs`), the give-up
//! policy, the counters and the [`Status`] snapshot.
//!
//! Both enums are meant to grow: a new input is one [`Event`] variant and its arm
//! in [`Fleet::step`]; a new effect is one [`Action`] variant and its arm in the
//! dispatcher's `perform`.

mod control;
mod pacer;
mod ready;
mod reread;
mod rolling;
mod signals;
mod types;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fleet;

use std::time::{Duration, Instant};

use crate::auth::{ExitClass, Termination};
use crate::config::OnGiveUp;
use crate::exit::code;
use crate::replica::{self, Replica, StateKind};
use crate::status::{Counters, ReplicaStatus, RestartReason, Status};

pub(crate) use pacer::Pacer;
pub(crate) use reread::WATCH_MIN_INTERVAL;
pub(crate) use signals::signal_name;
pub(crate) use types::{Action, Event, FleetConfig, KeyChange, Level, Timer, WorkerSpec};

/// A replica's index in the fleet: workers in config order, then replicas.
pub(crate) type SlotId = usize;

/// Names a control request's caller, so the answer finds it.
pub(crate) type ReplyId = u64;

/// One replica, as the fleet tracks it.
#[derive(Debug)]
struct Slot {
    worker: usize,
    replica: u32,
    label: String,
    machine: Replica,
    /// Incremented per spawn; events of older runs are ignored.
    run: u64,
    /// The pid of the current run, while it lives.
    pid: Option<u32>,
    /// When the current process started.
    running_since: Option<Instant>,
    /// Incremented per armed timer; older timers are ignored.
    timer_gen: u64,
    /// True once agentsup asked the current run to stop.
    stop_requested: bool,
    /// Waiting for the shared re-read to finish.
    awaiting_reread: bool,
    /// Spawns after the first.
    restarts: u64,
    /// Why the next spawn is a restart.
    restart_reason: RestartReason,
    /// Class of the last exit.
    last_exit: Option<ExitClass>,
    /// With a `ready` probe: whether the current run passed it.
    ready: Option<bool>,
}

/// The fleet: see the module docs.
#[derive(Debug)]
pub(crate) struct Fleet {
    cfg: FleetConfig,
    slots: Vec<Slot>,
    started: Instant,
    counters: Counters,
    reread: reread::Coordinator,
    rolling: rolling::Queue,
    signals: signals::SignalState,
    shutting_down: bool,
    exit_code: u8,
}

impl Fleet {
    /// A fleet of stopped replicas; send [`Event::Start`].
    pub(crate) fn new(cfg: FleetConfig, now: Instant) -> Fleet {
        let mut slots = Vec::new();
        for (wi, w) in cfg.workers.iter().enumerate() {
            for r in 0..w.replicas {
                slots.push(Slot {
                    worker: wi,
                    replica: r,
                    label: format!("{}.{r}", w.name),
                    machine: Replica::new(w.name.clone(), r),
                    run: 0,
                    pid: None,
                    running_since: None,
                    timer_gen: 0,
                    stop_requested: false,
                    awaiting_reread: false,
                    restarts: 0,
                    restart_reason: RestartReason::Crash,
                    last_exit: None,
                    ready: None,
                });
            }
        }
        Fleet {
            cfg,
            slots,
            started: now,
            counters: Counters::default(),
            reread: reread::Coordinator::default(),
            rolling: rolling::Queue::default(),
            signals: signals::SignalState::default(),
            shutting_down: false,
            exit_code: code::OK,
        }
    }

    /// Applies one event at `now`; returns what to do, in order.
    pub(crate) fn step(
        &mut self,
        event: Event,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Vec<Action> {
        let mut cx = Cx {
            now,
            rng,
            out: Vec::new(),
        };
        match event {
            Event::Start => {
                for slot in 0..self.slots.len() {
                    self.drive(slot, replica::Event::Start, &mut cx);
                }
            }
            Event::Signal(sig) => self.on_signal(sig, &mut cx),
            Event::Spawned { slot, run, pid } => self.on_spawned(slot, run, pid, &mut cx),
            Event::SpawnFailed { slot, run, reason } => {
                self.on_spawn_failed(slot, run, &reason, &mut cx);
            }
            Event::Exited {
                slot,
                run,
                status,
                class,
                reason,
                leaked,
                key,
            } => {
                if !self.is_current(slot, run) {
                    return cx.out;
                }
                self.on_exited(slot, status, class, reason, leaked, key, &mut cx);
            }
            Event::Timer(timer) => self.on_timer(timer, &mut cx),
            Event::Ready { slot, run } => self.on_ready(slot, run, &mut cx),
            Event::RereadFinished(result) => self.on_reread(result, &mut cx),
            Event::SourcesChanged => {
                cx.info("a watched source changed: re-reading and re-checking every source");
                self.reread.watch_triggered = true;
                self.start_reread_paced(WATCH_MIN_INTERVAL, &mut cx);
            }
            Event::Control { reply, request } => self.on_control(reply, request, &mut cx),
            Event::Refresh { sources } => {
                if !self.shutting_down && !sources.is_empty() {
                    cx.info(format!(
                        "refreshing {}: re-reading and re-checking every source",
                        sources.join(", ")
                    ));
                    self.reread.watch_triggered = true;
                    self.start_reread(&mut cx);
                }
            }
        }
        cx.out
    }

    /// The number of replicas.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The worker (index into [`FleetConfig::workers`]) and replica index of `slot`.
    pub(crate) fn slot(&self, slot: SlotId) -> (usize, u32) {
        (self.slots[slot].worker, self.slots[slot].replica)
    }

    /// True when `run` is the current run of `slot` (older runs' reports are
    /// dropped).
    pub(crate) fn is_current(&self, slot: SlotId, run: u64) -> bool {
        self.slots.get(slot).is_some_and(|s| s.run == run)
    }

    /// True once agentsup asked the current run of `slot` to stop (its exit is then
    /// not a failure, whatever its status).
    pub(crate) fn stop_requested(&self, slot: SlotId) -> bool {
        self.slots[slot].stop_requested
    }

    /// The state of `slot`'s replica.
    pub(crate) fn state(&self, slot: SlotId) -> StateKind {
        self.slots[slot].machine.state().kind()
    }

    /// The current run of `slot` (0 before its first spawn).
    pub(crate) fn run(&self, slot: SlotId) -> u64 {
        self.slots[slot].run
    }

    /// The pid of `slot`'s running process.
    pub(crate) fn pid(&self, slot: SlotId) -> Option<u32> {
        self.slots[slot].pid
    }

    /// With a `ready` probe: whether `slot`'s current run passed it.
    pub(crate) fn ready(&self, slot: SlotId) -> Option<bool> {
        self.slots[slot].ready
    }

    /// True once a stop of everything began.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// True when every replica is finished for good (stopped, exited, failed) and
    /// no process is left: the run ends.
    pub(crate) fn all_done(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.pid.is_none() && s.machine.state().kind().is_final())
    }

    /// The exit code and the closing line, once [`Self::all_done`].
    pub(crate) fn outcome(&self) -> (u8, &'static str) {
        let failed = self
            .slots
            .iter()
            .any(|s| s.machine.state().kind() == StateKind::Failed);
        let code = if failed {
            code::FAILURE
        } else {
            self.exit_code
        };
        let line = match (self.shutting_down, failed) {
            (false, false) => "every worker has finished",
            (false, true) => "every worker has finished; some failed for good",
            (true, true) => "all workers stopped; some had failed for good (exit status 1)",
            (true, false) => "all workers stopped",
        };
        (code, line)
    }

    /// The snapshot `status`, `/readyz` and `/metrics` read.
    pub(crate) fn status(&self, now: Instant) -> Status {
        Status {
            config: self.cfg.config_path.clone(),
            pid: self.cfg.pid,
            uptime_secs: now.saturating_duration_since(self.started).as_secs_f64(),
            replicas: self
                .slots
                .iter()
                .map(|s| ReplicaStatus {
                    worker: self.cfg.workers[s.worker].name.clone(),
                    replica: s.replica,
                    pid: s.pid,
                    state: s.machine.state().kind(),
                    uptime_secs: s
                        .running_since
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    restarts: s.restarts,
                    last_exit: s.last_exit.map(|c| c.as_str().to_string()),
                    ready: s.ready,
                })
                .collect(),
            counters: self.counters.clone(),
            // The refresh schedule is the dispatcher's; it fills this in.
            refresh: Vec::new(),
            shutting_down: self.shutting_down,
            taken: Some(now),
        }
    }

    /// Feeds one event to a replica's state machine and turns its actions into the
    /// fleet's.
    fn drive(&mut self, slot: SlotId, event: replica::Event, cx: &mut Cx<'_>) {
        let jitter = cx.rng.f64() * 2.0 - 1.0;
        let policy = &self.cfg.workers[self.slots[slot].worker].policy;
        let actions = self.slots[slot].machine.step(policy, event, jitter);
        for action in actions {
            match action {
                replica::Action::Spawn => self.spawn(slot, cx),
                replica::Action::Signal { group, sig } => {
                    self.slots[slot].stop_requested = true;
                    cx.out.push(Action::Signal { slot, group, sig });
                }
                replica::Action::ArmTimer { at } => {
                    let s = &mut self.slots[slot];
                    s.timer_gen += 1;
                    cx.out.push(Action::ArmTimer {
                        at,
                        timer: Timer::Replica {
                            slot,
                            generation: s.timer_gen,
                        },
                    });
                }
                replica::Action::RereadSources => {
                    self.slots[slot].awaiting_reread = true;
                    self.request_auth_reread(cx);
                }
                replica::Action::Log(t) => cx.out.push(Action::Transition(t)),
                replica::Action::GiveUp => self.give_up(slot, cx),
            }
        }
    }

    fn spawn(&mut self, slot: SlotId, cx: &mut Cx<'_>) {
        if self.shutting_down {
            return;
        }
        let s = &mut self.slots[slot];
        if s.run > 0 {
            s.restarts += 1;
            let name = self.cfg.workers[s.worker].name.clone();
            *self
                .counters
                .restarts
                .entry(name)
                .or_default()
                .entry(s.restart_reason)
                .or_default() += 1;
        }
        s.restart_reason = RestartReason::Crash;
        s.run += 1;
        s.stop_requested = false;
        s.pid = None;
        let run = s.run;
        cx.out.push(Action::Spawn { slot, run });
        // With a `ready` probe, a new run is not ready until it passes; a rolling
        // restart waits for that no longer than the timeout.
        let ready = self.cfg.workers[s.worker].ready.as_ref().map(|r| r.0);
        s.ready = ready.map(|_| false);
        if let Some(timeout) = ready {
            cx.out.push(Action::ArmTimer {
                at: cx.now + timeout,
                timer: Timer::ReadyTimeout { slot, run },
            });
        }
    }

    fn give_up(&mut self, slot: SlotId, cx: &mut Cx<'_>) {
        let label = self.slots[slot].label.clone();
        match self.cfg.on_give_up {
            OnGiveUp::Exit => {
                cx.error(format!(
                    "{label} failed for good; on_give_up = \"exit\": stopping every worker (exit status 1)"
                ));
                self.exit_code = code::FAILURE;
                self.begin_shutdown(cx);
            }
            OnGiveUp::Keep => {
                // The exit status is decided at the end, from the replicas still
                // `failed` then: `agentsup restart` may have revived this one.
                cx.error(format!(
                    "{label} failed for good; on_give_up = \"keep\": the other workers keep running"
                ));
            }
        }
    }

    fn on_spawned(&mut self, slot: SlotId, run: u64, pid: u32, cx: &mut Cx<'_>) {
        if !self.is_current(slot, run) {
            return;
        }
        self.slots[slot].pid = Some(pid);
        self.slots[slot].running_since = Some(cx.now);
        self.place_signals(Some(pid), cx);
        let at = cx.now;
        self.drive(
            slot,
            replica::Event::Spawned {
                pid: pid as i32,
                at,
            },
            cx,
        );
        // A restart that met this replica while it was starting is being applied
        // now: the rolling restart moves on once that one is up, and ready when it
        // has a `ready` probe.
        if self.slots[slot].ready != Some(false) {
            self.rolling_up(slot, cx);
        }
    }

    fn on_spawn_failed(&mut self, slot: SlotId, run: u64, reason: &str, cx: &mut Cx<'_>) {
        if !self.is_current(slot, run) {
            return;
        }
        let worker = &self.cfg.workers[self.slots[slot].worker].name;
        cx.error(format!(
            "{} could not start: worker {worker:?}: {reason}",
            self.slots[slot].label
        ));
        let at = cx.now;
        self.drive(
            slot,
            replica::Event::SpawnFailed {
                reason: format!("could not start: {reason}"),
                at,
            },
            cx,
        );
        self.rolling_done(slot, cx);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all parts of one event"
    )]
    fn on_exited(
        &mut self,
        slot: SlotId,
        status: Termination,
        class: ExitClass,
        reason: String,
        leaked: bool,
        key: Option<u64>,
        cx: &mut Cx<'_>,
    ) {
        if leaked {
            cx.warn(format!(
                "{}: processes it started outside its process group kept its output open after it exited; stopped reading it (the final sweep stops them at shutdown)",
                self.slots[slot].label
            ));
        }
        let s = &mut self.slots[slot];
        s.pid = None;
        s.running_since = None;
        s.last_exit = Some(class);
        if s.ready.is_some() {
            s.ready = Some(false);
        }
        // A stop agentsup asked for (restart, reload, rotation) keeps the reason it
        // set; otherwise the exit class is the reason.
        if !s.stop_requested {
            s.restart_reason = class.into();
        }
        if class == ExitClass::Auth {
            let name = self.cfg.workers[s.worker].name.clone();
            *self.counters.auth_failures.entry(name).or_default() += 1;
        }
        let at = cx.now;
        self.drive(
            slot,
            replica::Event::Exited {
                status,
                class,
                reason,
                key,
                at,
            },
            cx,
        );
    }

    fn on_timer(&mut self, timer: Timer, cx: &mut Cx<'_>) {
        match timer {
            Timer::Replica { slot, generation } => {
                if self
                    .slots
                    .get(slot)
                    .is_some_and(|s| s.timer_gen == generation)
                {
                    let at = cx.now;
                    self.drive(slot, replica::Event::TimerFired { at }, cx);
                }
            }
            Timer::RereadDone { slot, changed_keys } => {
                let at = cx.now;
                self.drive(slot, replica::Event::RereadDone { changed_keys, at }, cx);
            }
            Timer::RereadHoldOver => self.on_hold_over(cx),
            Timer::RereadPaceOver => self.on_pace_over(cx),
            Timer::ShutdownDeadline => {
                cx.warn(format!(
                    "shutdown_timeout ({}) nearly reached: killing what is left",
                    humantime::format_duration(self.cfg.shutdown_timeout)
                ));
                self.kill_all(cx);
                // Descendants that left their worker's process group (setsid) would
                // otherwise hold output pipes open past the deadline.
                cx.out.push(Action::Sweep);
            }
            Timer::UnplacedSignals => self.place_signals(None, cx),
            Timer::ReadyTimeout { slot, run } => self.on_ready_timeout(slot, run, cx),
        }
    }

    fn begin_shutdown(&mut self, cx: &mut Cx<'_>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.rolling.clear();
        for slot in 0..self.slots.len() {
            let at = cx.now;
            self.drive(slot, replica::Event::StopRequested { at }, cx);
        }
        // Kill what is left at 90 % of shutdown_timeout, so that draining output and
        // reaping fit inside it and Docker's own SIGKILL (same 10 s default) never
        // comes first; and at the full timeout stop waiting on stdout: a log reader
        // that stalls must not keep agentsup (and the pod) alive past it.
        cx.out.push(Action::BeginShutdown {
            output_deadline: cx.now + self.cfg.shutdown_timeout,
        });
        cx.out.push(Action::ArmTimer {
            at: cx.now + crate::plan::kill_after(self.cfg.shutdown_timeout),
            timer: Timer::ShutdownDeadline,
        });
    }

    fn kill_all(&mut self, cx: &mut Cx<'_>) {
        for slot in 0..self.slots.len() {
            let at = cx.now;
            self.drive(slot, replica::Event::ForceKill { at }, cx);
        }
    }
}

/// One step's context: the time, the random source and the actions so far.
struct Cx<'a> {
    now: Instant,
    rng: &'a mut fastrand::Rng,
    out: Vec<Action>,
}

impl Cx<'_> {
    fn log(&mut self, level: Level, message: impl Into<String>) {
        self.out.push(Action::Log {
            level,
            message: message.into(),
        });
    }

    fn info(&mut self, message: impl Into<String>) {
        self.log(Level::Info, message);
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.log(Level::Warn, message);
    }

    fn error(&mut self, message: impl Into<String>) {
        self.log(Level::Error, message);
    }
}

/// Milliseconds are enough precision for a log line.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
