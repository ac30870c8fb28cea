//! `agentsup run`: the dispatcher (SPEC 5).
//!
//! One task owns every replica's state. Every input — a signal, a run that started
//! or exited, a timer, a finished re-read of the sources — becomes one event; the
//! pure [`crate::replica`] step function decides, and this module performs the
//! actions it returns (spawn, signal a process group, arm a timer, re-read the
//! sources, log). Nothing else touches replica state.
//!
//! Start-up order matters: signal handlers first, before the guard fork and the
//! config (an early `docker stop` must not be lost; see [`crate::signals`]), then
//! the reaper and the spawner thread, then the sources are loaded
//! **once** and checked; only when the checks pass does any worker start.

mod control_ops;
mod early_stop;
mod events;
mod reread;
mod rotation;
mod run_task;
mod signal_ops;
mod startup;
mod sweep;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::ExitClass;
use crate::config::OnGiveUp;
use crate::env::BuiltEnv;
use crate::exit::{Result, code};
use crate::output::{OutputSink, Tail};
use crate::plan::{Plan, WorkerPlan};
use crate::redact::SharedRedactor;
use crate::replica::{self, Action, Event, Replica, StopSignal};
use crate::secret::Sensitive;
use crate::signals::{SignalEvent, SignalStream};
use crate::sources::{ProcessEnv, Snapshot};
use crate::spawn::{DEFAULT_RESET_SIGNALS, SpawnSpec, Spawner, kill_group};
use crate::status::{ControlRequest, ControlResponse, Counters, RestartReason, Status};

pub use startup::{RunOptions, cmd_run};

use run_task::{RunEvent, RunRequest};
use signal_ops::signal_name;

/// One replica of one worker, as the dispatcher tracks it.
struct Slot {
    worker: usize,
    replica: u32,
    label: String,
    machine: Replica,
    policy: replica::Policy,
    /// Incremented per run; events of older runs are ignored.
    run: u64,
    /// The pid of the current run, while it lives.
    pid: Option<u32>,
    /// Output tail of the current run (classification).
    /// Output tails for exit classification, stdout and stderr apart: a worker
    /// that floods stdout after its traceback must not push the traceback out.
    tail: [Arc<Mutex<Tail>>; 2],
    /// The declared keys the current run was given (rotation detection, fingerprint).
    injected: Vec<(String, Sensitive)>,
    /// The current run's secrets, kept registered with the redactor until the next
    /// run replaces them, however many rotations happen meanwhile.
    held: Option<crate::redact::Held>,
    /// Incremented per armed timer; older timers are ignored.
    timer_gen: u64,
    /// True once agentsup asked the current run to stop.
    stop_requested: bool,
    /// Waiting for the shared re-read to finish.
    awaiting_reread: bool,
    /// Spawns after the first.
    restarts: u64,
    /// Why the next spawn is a restart (`crash`, `auth`, `rotation`, `reload`, …).
    restart_reason: RestartReason,
    /// Class of the last exit.
    last_exit: Option<ExitClass>,
    /// When the current process started.
    running_since: Option<Instant>,
}

/// Inputs of the dispatcher.
enum Input {
    Timer {
        slot: usize,
        generation: u64,
    },
    Reread(Box<reread::Outcome>),
    ShutdownDeadline,
    Control(ControlRequest, oneshot::Sender<ControlResponse>),
    /// A watched source changed (debounced).
    SourcesChanged,
    /// A re-read's result for one replica, delivered late to spread a fleet's
    /// restarts.
    RereadDone {
        slot: usize,
        changed_keys: Vec<String>,
    },
    /// Automatic re-reads were held after a failed one; the hold is over.
    RereadHoldOver,
    /// The minimum pause between two re-reads is over (`rotation::REREAD_MIN_INTERVAL`).
    RereadPaceOver,
    /// Ignored signals wait to be placed (see `Dispatcher::ignored_signal`).
    UnplacedSignals,
}

/// The dispatcher's state.
struct Dispatcher {
    plan: Arc<Plan>,
    workers: Vec<WorkerPlan>,
    /// Fork mode: each worker's template (same index as `workers`), if it forks.
    templates: Vec<Option<crate::fork::ForkTemplate>>,
    process_env: Arc<ProcessEnv>,
    snapshot: Arc<Snapshot>,
    slots: Vec<Slot>,
    spawner: Spawner,
    reaper: crate::reaper::ReaperHandle,
    sink: OutputSink,
    redactor: SharedRedactor,
    runs_tx: mpsc::UnboundedSender<RunEvent>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    reread_in_flight: bool,
    /// Another re-read was asked for while one ran; run it when that one ends.
    reread_queued: bool,
    /// When the last re-read started: the next waits for the minimum interval.
    reread_last_start: Option<Instant>,
    /// A re-read waits for the minimum interval.
    reread_deferred: bool,
    /// When the earliest armed pace timer fires.
    reread_pace_at: Option<Instant>,
    /// Holds auth-triggered re-reads back after failed ones.
    reread_pacer: reread::Pacer,
    /// A SIGHUP re-read is pending; restart replicas whose environment changed.
    reload_requested: bool,
    /// Replicas waiting for a rolling restart (SIGHUP), one at a time.
    rolling: Vec<usize>,
    rolling_current: Option<usize>,
    shutting_down: bool,
    shutdown_signals: u32,
    exit_code: u8,
    status_tx: watch::Sender<Arc<Status>>,
    started: Instant,
    counters: Counters,
    /// `agentsup reload` callers waiting for the re-read's outcome.
    reload_replies: Vec<oneshot::Sender<ControlResponse>>,
    /// The pending re-read was started by a watched source changing.
    watch_triggered: bool,
    /// Processes whose ignored signals were logged (bounded).
    signal_warned: std::collections::HashSet<u32>,
    /// Ignored signals whose sender's worker is not known yet: `(sig, sender, below)`.
    unplaced_signals: Vec<(i32, u32, u32)>,
}

impl Dispatcher {
    fn worker_of(&self, slot: usize) -> &WorkerPlan {
        &self.workers[self.slots[slot].worker]
    }

    fn built_env(&self, slot: usize) -> BuiltEnv {
        let s = &self.slots[slot];
        crate::env::build(
            &self.plan,
            &self.workers[s.worker],
            s.replica,
            &self.snapshot,
            &self.process_env,
        )
    }

    /// Feeds one event to a replica's state machine and performs the actions.
    fn drive(&mut self, slot: usize, event: Event) {
        let jitter = fastrand::f64() * 2.0 - 1.0;
        let s = &mut self.slots[slot];
        let actions = s.machine.step(&s.policy, event, jitter);
        for action in actions {
            self.perform(slot, action);
        }
    }

    fn perform(&mut self, slot: usize, action: Action) {
        match action {
            Action::Spawn => self.spawn(slot),
            Action::Signal { group, sig } => {
                let signo = match sig {
                    StopSignal::Stop => self.worker_of(slot).stop_signal as i32,
                    StopSignal::Kill => libc::SIGKILL,
                };
                self.slots[slot].stop_requested = true;
                // The machine names the group it saw running; the slot's pid is the
                // same run (older runs' events are dropped before they get here).
                // `stop_target = "leader"` sends the polite signal to the leader
                // alone (its children are its business); SIGKILL takes the group.
                let leader_only = matches!(sig, StopSignal::Stop)
                    && self.worker_of(slot).stop_target == crate::config::StopTarget::Leader;
                let _ = if leader_only {
                    crate::spawn::kill_pid(group as u32, signo)
                } else {
                    kill_group(group as u32, signo)
                };
            }
            Action::ArmTimer { at } => self.arm_timer(slot, at),
            Action::RereadSources => {
                self.slots[slot].awaiting_reread = true;
                self.request_auth_reread();
            }
            Action::Log(t) => self.log_transition(&t),
            Action::GiveUp => self.give_up(slot),
        }
    }

    fn spawn(&mut self, slot: usize) {
        if self.shutting_down {
            return;
        }
        let env = self.built_env(slot);
        let secrets: Vec<_> = env.secrets().collect();
        self.redactor.extend(secrets.iter().cloned());
        // Taken before the previous run's hold is dropped (the assignment below),
        // so a value both runs hold is never unregistered in between.
        let held = self.redactor.hold(secrets);
        // Disjoint field borrows: no WorkerPlan (globs, regexes) is cloned per spawn.
        let worker = &self.workers[self.slots[slot].worker];
        let s = &mut self.slots[slot];
        if s.run > 0 {
            s.restarts += 1;
            *self
                .counters
                .restarts
                .entry(worker.name.clone())
                .or_default()
                .entry(s.restart_reason)
                .or_default() += 1;
        }
        s.restart_reason = RestartReason::Crash;
        s.run += 1;
        s.stop_requested = false;
        s.pid = None;
        s.held = Some(held);
        s.injected = env
            .vars
            .iter()
            .filter(|(k, _)| worker.declares(k))
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        for tail in &s.tail {
            if let Ok(mut t) = tail.lock() {
                t.clear();
            }
        }
        let req = RunRequest {
            slot,
            run: s.run,
            spec: SpawnSpec {
                argv: worker.command.clone(),
                env: env.pairs(),
                cwd: worker.cwd.clone(),
                stdin_null: true,
                capture: true,
                own_group: true,
                reset_signals: DEFAULT_RESET_SIGNALS.to_vec(),
                creds: worker.creds.clone(),
            },
            worker: Arc::from(worker.name.as_str()),
            replica: s.replica,
            tail: s.tail.clone(),
            fork: self.templates[s.worker].clone(),
        };
        run_task::start(
            req,
            self.spawner.clone(),
            self.sink.clone(),
            self.redactor.clone(),
            self.runs_tx.clone(),
        );
    }

    fn arm_timer(&mut self, slot: usize, at: Instant) {
        let s = &mut self.slots[slot];
        s.timer_gen += 1;
        let generation = s.timer_gen;
        if at <= Instant::now() {
            // A zero delay (backoff initial = "0s", a rotation): no timer task, which
            // tokio would round up to its next 1 ms tick, plus a task hop.
            let _ = self.inputs_tx.send(Input::Timer { slot, generation });
            return;
        }
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = tx.send(Input::Timer { slot, generation });
        });
    }

    fn give_up(&mut self, slot: usize) {
        let label = self.slots[slot].label.clone();
        match self.plan.supervisor.on_give_up {
            OnGiveUp::Exit => {
                tracing::error!(
                    "{label} failed for good; on_give_up = \"exit\": stopping every worker (exit status 1)"
                );
                self.exit_code = code::FAILURE;
                self.begin_shutdown();
            }
            OnGiveUp::Keep => {
                // The exit status is decided at the end, from the replicas still
                // `failed` then: `agentsup restart` may have revived this one.
                tracing::error!(
                    "{label} failed for good; on_give_up = \"keep\": the other workers keep running"
                );
            }
        }
    }

    fn on_run_event(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Spawned { slot, run, pid } => {
                if self.slots[slot].run != run {
                    return;
                }
                self.slots[slot].pid = Some(pid);
                self.slots[slot].running_since = Some(Instant::now());
                if !self.unplaced_signals.is_empty() {
                    self.place_signals(Some(pid));
                }
                self.drive(
                    slot,
                    Event::Spawned {
                        pid: pid as i32,
                        at: Instant::now(),
                    },
                );
                // A restart that met this replica while it was starting is being
                // applied now: the rolling restart moves on once that one is up.
                if self.rolling_current == Some(slot)
                    && matches!(
                        self.slots[slot].machine.state(),
                        replica::State::Running { .. }
                    )
                {
                    self.rolling_current = None;
                    self.next_rolling();
                }
            }
            RunEvent::SpawnFailed { slot, run, reason } => {
                if self.slots[slot].run != run {
                    return;
                }
                let worker = self.worker_of(slot).name.clone();
                tracing::error!(
                    "{} could not start: worker {worker:?}: {}",
                    self.slots[slot].label,
                    reason
                );
                self.drive(
                    slot,
                    Event::SpawnFailed {
                        reason: format!("could not start: {reason}"),
                        at: Instant::now(),
                    },
                );
                if self.rolling_current == Some(slot) {
                    self.rolling_current = None;
                    self.next_rolling();
                }
            }
            RunEvent::Exited {
                slot,
                run,
                termination,
                leaked,
            } => {
                if self.slots[slot].run != run {
                    return;
                }
                if leaked {
                    tracing::warn!(
                        "{}: processes it started outside its process group kept its output open after it exited; stopped reading it (the final sweep stops them at shutdown)",
                        self.slots[slot].label
                    );
                }
                let (status, class, reason) = self.classify(slot, termination);
                let s = &mut self.slots[slot];
                s.pid = None;
                s.running_since = None;
                s.last_exit = Some(class);
                // A stop agentsup asked for (restart, reload, rotation) keeps the
                // reason it set; otherwise the exit class is the reason.
                if !s.stop_requested {
                    s.restart_reason = class.into();
                }
                if class == ExitClass::Auth {
                    let name = self.workers[s.worker].name.clone();
                    *self.counters.auth_failures.entry(name).or_default() += 1;
                }
                self.drive(
                    slot,
                    Event::Exited {
                        status,
                        class,
                        reason,
                        at: Instant::now(),
                    },
                );
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.rolling.clear();
        for slot in 0..self.slots.len() {
            self.drive(slot, Event::StopRequested { at: Instant::now() });
        }
        let tx = self.inputs_tx.clone();
        // Kill what is left at 90 % of shutdown_timeout, so that draining output and
        // reaping fit inside it and Docker's own SIGKILL (same 10 s default) never
        // comes first.
        let grace = self.plan.supervisor.shutdown_timeout.mul_f64(0.9);
        // And at the full timeout stop waiting on stdout: a log reader that stalls
        // must not keep agentsup (and the pod) alive past it.
        self.sink
            .abandon_at(Instant::now() + self.plan.supervisor.shutdown_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(Input::ShutdownDeadline);
        });
    }

    fn kill_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.drive(slot, Event::ForceKill { at: Instant::now() });
        }
    }

    fn all_done(&self) -> bool {
        self.slots.iter().all(|s| {
            s.pid.is_none()
                && matches!(
                    s.machine.state(),
                    replica::State::Stopped
                        | replica::State::Exited
                        | replica::State::Failed { .. }
                )
        })
    }

    async fn run(
        mut self,
        mut signals: SignalStream,
        mut runs_rx: mpsc::UnboundedReceiver<RunEvent>,
        mut inputs_rx: mpsc::UnboundedReceiver<Input>,
    ) -> (u8, SignalStream) {
        // A stop signal that arrived while sources were loading wins: nothing starts
        // (a `docker stop` during a slow secret command must not spawn workers).
        // Others that came meanwhile (a SIGHUP) are handled once workers start.
        let mut early = Vec::new();
        while let Some(ev) = signals.try_next() {
            if let SignalEvent::Shutdown(sig) = ev {
                tracing::info!(
                    "received {} before any worker started: exiting without starting anything",
                    signal_name(sig)
                );
                return (code::OK, signals);
            }
            early.push(ev);
        }
        for slot in 0..self.slots.len() {
            self.drive(slot, Event::Start);
        }
        for ev in early {
            self.on_signal(ev);
        }
        loop {
            if self.all_done() {
                break;
            }
            tokio::select! {
                sig = signals.next() => self.on_signal(sig),
                Some(ev) = runs_rx.recv() => self.on_run_event(ev),
                Some(input) = inputs_rx.recv() => match input {
                    Input::Timer { slot, generation } => {
                        if self.slots[slot].timer_gen == generation {
                            self.drive(slot, Event::TimerFired { at: Instant::now() });
                        }
                    }
                    Input::Reread(outcome) => self.on_reread(*outcome),
                    Input::Control(req, reply) => self.on_control(req, reply),
                    Input::RereadDone { slot, changed_keys } => {
                        self.drive(slot, Event::RereadDone { changed_keys, at: Instant::now() });
                    }
                    Input::RereadHoldOver => self.on_hold_over(),
                    Input::RereadPaceOver => self.on_pace_over(),
                    Input::UnplacedSignals => self.place_signals(None),
                    Input::SourcesChanged => {
                        tracing::info!("a watched source changed: re-reading and re-checking every source");
                        self.watch_triggered = true;
                        self.start_watch_reread();
                    }
                    Input::ShutdownDeadline => {
                        tracing::warn!(
                            "shutdown_timeout ({}) nearly reached: killing what is left",
                            humantime::format_duration(self.plan.supervisor.shutdown_timeout)
                        );
                        self.kill_all();
                        // Descendants that left their worker's process group (setsid)
                        // would otherwise hold output pipes open past the deadline.
                        sweep::Sweep::default().pass();
                    }
                },
            }
            self.publish();
        }
        self.publish();
        // Every replica is gone: stop the fork templates (each kills a straggler).
        for template in self.templates.iter().flatten() {
            template.shutdown(std::time::Duration::from_secs(1)).await;
        }
        // Repeats until nothing is left: a grandchild reparented to us while its
        // parent was stopping is found on a later pass.
        tokio::task::block_in_place(|| {
            sweep::final_sweep(Instant::now() + std::time::Duration::from_secs(1));
        });
        let failed = self
            .slots
            .iter()
            .any(|s| matches!(s.machine.state(), replica::State::Failed { .. }));
        if failed {
            self.exit_code = code::FAILURE;
        }
        if !self.shutting_down {
            tracing::info!(
                "every worker has finished{}",
                if failed { "; some failed for good" } else { "" }
            );
        } else if failed {
            tracing::info!("all workers stopped; some had failed for good (exit status 1)");
        } else {
            tracing::info!("all workers stopped");
        }
        (self.exit_code, signals)
    }
}

/// Everything the dispatcher needs, prepared by [`startup`].
struct RunContext {
    plan: Arc<Plan>,
    workers: Vec<WorkerPlan>,
    templates: Vec<Option<crate::fork::ForkTemplate>>,
    process_env: Arc<ProcessEnv>,
    snapshot: Arc<Snapshot>,
    signals: SignalStream,
    spawner: Spawner,
    reaper: crate::reaper::ReaperHandle,
    sink: OutputSink,
    redactor: SharedRedactor,
    status_tx: watch::Sender<Arc<Status>>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    inputs_rx: mpsc::UnboundedReceiver<Input>,
}

/// Runs the dispatcher to completion; returns the exit code, and the signal
/// streams for the last phase (flushing stdout).
async fn supervise(ctx: RunContext) -> Result<(u8, SignalStream)> {
    let (runs_tx, runs_rx) = mpsc::unbounded_channel();
    let mut slots = Vec::new();
    for (wi, w) in ctx.workers.iter().enumerate() {
        for r in 0..w.replicas {
            slots.push(Slot {
                worker: wi,
                replica: r,
                label: format!("{}.{r}", w.name),
                machine: Replica::new(w.name.clone(), r),
                policy: replica_policy(w),
                run: 0,
                pid: None,
                tail: [
                    Arc::new(Mutex::new(Tail::default())),
                    Arc::new(Mutex::new(Tail::default())),
                ],
                injected: Vec::new(),
                held: None,
                timer_gen: 0,
                stop_requested: false,
                awaiting_reread: false,
                restarts: 0,
                restart_reason: RestartReason::Crash,
                last_exit: None,
                running_since: None,
            });
        }
    }
    let d = Dispatcher {
        plan: ctx.plan,
        workers: ctx.workers,
        templates: ctx.templates,
        process_env: ctx.process_env,
        snapshot: ctx.snapshot,
        slots,
        spawner: ctx.spawner,
        reaper: ctx.reaper,
        sink: ctx.sink,
        redactor: ctx.redactor,
        runs_tx,
        inputs_tx: ctx.inputs_tx,
        reread_in_flight: false,
        reread_queued: false,
        reread_last_start: None,
        reread_deferred: false,
        reread_pace_at: None,
        reread_pacer: reread::Pacer::default(),
        reload_requested: false,
        rolling: Vec::new(),
        rolling_current: None,
        shutting_down: false,
        shutdown_signals: 0,
        exit_code: code::OK,
        status_tx: ctx.status_tx,
        started: Instant::now(),
        counters: Counters::default(),
        reload_replies: Vec::new(),
        watch_triggered: false,
        signal_warned: std::collections::HashSet::new(),
        unplaced_signals: Vec::new(),
    };
    Ok(d.run(ctx.signals, runs_rx, ctx.inputs_rx).await)
}

/// The replica policy of a worker, from its plan.
pub fn replica_policy(w: &WorkerPlan) -> replica::Policy {
    replica::Policy {
        restart: match w.restart {
            crate::config::RestartMode::Always => replica::RestartPolicy::Always,
            crate::config::RestartMode::OnFailure => replica::RestartPolicy::OnFailure,
            crate::config::RestartMode::Never => replica::RestartPolicy::Never,
        },
        backoff: replica::Backoff {
            initial: w.backoff.initial,
            max: w.backoff.max,
            multiplier: w.backoff.multiplier,
            jitter: w.backoff.jitter,
            reset_after: w.backoff.reset_after,
        },
        max_restarts: w.max_restarts,
        auth_max_delay: w.auth.max_delay,
        stop_timeout: w.stop_timeout,
    }
}
