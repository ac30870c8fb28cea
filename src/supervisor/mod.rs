//! `agentsup run`: the dispatcher (SPEC 5).
//!
//! One task owns the fleet ([`crate::fleet::Fleet`], every replica's state). Every
//! input — a signal, a run that started or exited, a timer, a finished re-read of
//! the sources, a watched source that changed, a control request — becomes one
//! [`crate::fleet::Event`]; the pure `Fleet::step` decides, and this module
//! performs the actions it returns (spawn, signal a process group, arm a timer,
//! re-read the sources, log, answer). Nothing else touches replica state.
//!
//! Start-up order matters: signal handlers first, before the guard fork and the
//! config (an early `docker stop` must not be lost; see [`crate::signals`]), then
//! the reaper and the spawner thread, then the sources are loaded
//! **once** and checked; only when the checks pass does any worker start.

mod early_stop;
mod events;
mod in_place;
mod ready_ops;
mod refresh_ops;
mod reread;
mod run_task;
mod startup;
mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::env::BuiltEnv;
use crate::exit::{Result, code};
use crate::fleet::{
    self, Action, Event, Fleet, FleetConfig, KeyChange, Level, ReplyId, SlotId, Timer, WorkerSpec,
};
use crate::output::{OutputSink, Tail};
use crate::plan::{Plan, WorkerPlan};
use crate::process::{DEFAULT_RESET_SIGNALS, SpawnSpec, Spawner, kill_group};
use crate::redact::SharedRedactor;
use crate::replica::{self, StopSignal};
use crate::secret::Sensitive;
use crate::signals::{SignalEvent, SignalStream};
use crate::sources::{ProcessEnv, Snapshot};
use crate::status::{ControlRequest, ControlResponse, Status};

pub(crate) use startup::{RunOptions, cmd_run};

use fleet::signal_name;
use run_task::{RunEvent, RunRequest};

/// What the dispatcher keeps per replica beside the fleet: what only performing
/// needs (output tails, the values the current run got).
struct SlotIo {
    /// Output tails for exit classification, stdout and stderr apart: a worker
    /// that floods stdout after its traceback must not push the traceback out.
    tail: [Arc<Mutex<Tail>>; 2],
    /// The declared keys the current run was given (rotation detection, fingerprint).
    injected: Vec<(String, Sensitive)>,
    /// The current run's secrets, kept registered with the redactor until the next
    /// run replaces them, however many rotations happen meanwhile.
    held: Option<crate::redact::Held>,
    /// Stops the current run's `ready` probe.
    probe_cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// This run's notify socket already refused a datagram (warned once a run).
    notify_refused: bool,
    /// Why the current run's latest `http`/`exec` probe attempt failed.
    probe_failure: Option<Arc<Mutex<Option<String>>>>,
}

/// Inputs of the dispatcher besides signals and run events.
enum Input {
    /// A timer the fleet armed is due.
    Timer(Timer),
    /// A re-read finished.
    Reread(Box<reread::Outcome>),
    /// A control request and where to answer it.
    Control(ControlRequest, oneshot::Sender<ControlResponse>),
    /// A watched source changed (debounced).
    SourcesChanged,
    /// A `command` source's refresh is due (`refresh_ops`).
    RefreshDue { generation: u64 },
    /// Time to ping systemd's watchdog (`WatchdogSec=`).
    Watchdog,
    /// A replica's `ready` probe passed for that run.
    Ready { slot: usize, run: u64 },
    /// `READY=1` arrived on that run's notify socket from `sender`.
    Notified {
        slot: usize,
        run: u64,
        sender: Option<ready_ops::Sender>,
    },
}

/// The dispatcher: turns every input into a [`fleet::Event`], steps the fleet and
/// performs the actions it returns.
struct Dispatcher {
    fleet: Fleet,
    rng: fastrand::Rng,
    plan: Arc<Plan>,
    workers: Vec<WorkerPlan>,
    /// Fork mode: each worker's template (same index as `workers`), if it forks.
    templates: Vec<Option<crate::fork::ForkTemplate>>,
    process_env: Arc<ProcessEnv>,
    snapshot: Arc<Snapshot>,
    io: Vec<SlotIo>,
    spawner: Spawner,
    reaper: crate::reaper::ReaperHandle,
    sink: OutputSink,
    redactor: SharedRedactor,
    runs_tx: mpsc::UnboundedSender<RunEvent>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    status_tx: watch::Sender<Arc<Status>>,
    /// Control callers waiting for an answer.
    replies: HashMap<ReplyId, oneshot::Sender<ControlResponse>>,
    next_reply: ReplyId,
    /// Keys the fingerprints of the values a run was given: per process, so a
    /// fingerprint means nothing outside it.
    key_hasher: std::hash::RandomState,
    /// Key files of `on_rotation = "file"`/`"signal"` workers (see `in_place`).
    keys: Option<crate::keys_dir::KeysDir>,
    /// When `command` sources run again (`refresh`, `ttl_pointer`).
    refresh: crate::refresh::Schedule,
    /// Generation of the armed refresh timer.
    refresh_gen: u64,
    /// systemd's `Type=notify` protocol, when agentsup runs under it.
    systemd: Option<crate::notify::Systemd>,
    /// Sockets of `ready = { notify = true }` workers, made on first use.
    notify_dir: Option<crate::ready::NotifyDir>,
}

impl Dispatcher {
    fn worker_of(&self, slot: SlotId) -> &WorkerPlan {
        &self.workers[self.fleet.slot(slot).0]
    }

    fn built_env(&self, slot: SlotId) -> BuiltEnv {
        let (w, r) = self.fleet.slot(slot);
        crate::env::build(
            &self.plan,
            &self.workers[w],
            r,
            &self.snapshot,
            &self.process_env,
        )
    }

    /// Steps the fleet with one event and performs what it returns.
    fn step(&mut self, event: Event) {
        let actions = self.fleet.step(event, Instant::now(), &mut self.rng);
        for action in actions {
            self.perform(action);
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Spawn { slot, run } => self.spawn(slot, run),
            Action::Signal { slot, group, sig } => {
                let w = self.worker_of(slot);
                let signo = match sig {
                    StopSignal::Stop => w.stop_signal as i32,
                    StopSignal::Kill => libc::SIGKILL,
                };
                // `stop_target = "leader"` sends the polite signal to the leader
                // alone (its children are its business); SIGKILL takes the group.
                let leader_only =
                    sig == StopSignal::Stop && w.stop_target == crate::config::StopTarget::Leader;
                let _ = if leader_only {
                    crate::process::kill_pid(group as u32, signo)
                } else {
                    kill_group(group as u32, signo)
                };
            }
            Action::ArmTimer { at, timer } => self.arm_timer(at, timer),
            Action::Reread => reread::start(
                self.plan.clone(),
                self.workers.clone(),
                self.process_env.clone(),
                self.reaper.clone(),
                self.inputs_tx.clone(),
            ),
            Action::Transition(t) => self.log_transition(&t),
            Action::Log { level, message } => match level {
                Level::Info => tracing::info!("{message}"),
                Level::Warn => tracing::warn!("{message}"),
                Level::Error => tracing::error!("{message}"),
            },
            Action::Reply { to, mut response } => {
                if let Some(status) = response.status.as_mut() {
                    status.refresh = self.refresh.status(Instant::now());
                }
                if let Some(tx) = self.replies.remove(&to) {
                    let _ = tx.send(response);
                }
            }
            Action::BeginShutdown { output_deadline } => {
                if let Some(n) = self.systemd.as_mut() {
                    n.stopping();
                }
                for slot in 0..self.io.len() {
                    self.cancel_probe(slot);
                }
                self.sink.abandon_at(output_deadline);
            }
            Action::RereadOutcome { accepted, why } => {
                self.refresh_outcome(accepted, why.as_deref())
            }
            Action::ApplyInPlace => self.apply_in_place(),
            Action::Sweep => {
                sweep::Sweep::default().pass();
            }
        }
    }

    fn spawn(&mut self, slot: SlotId, run: u64) {
        let env = self.built_env(slot);
        let mut pairs = env.pairs();
        self.prepare_key_files(self.fleet.slot(slot).0, &env, &mut pairs);
        self.prepare_ready(slot, run, &mut pairs);
        let secrets: Vec<_> = env.secrets().collect();
        self.redactor.extend(secrets.iter().cloned());
        // Taken before the previous run's hold is dropped (the assignment below),
        // so a value both runs hold is never unregistered in between.
        let held = self.redactor.hold(secrets);
        let (wi, replica) = self.fleet.slot(slot);
        // Disjoint field borrows: no WorkerPlan (globs, regexes) is cloned per spawn.
        let worker = &self.workers[wi];
        let io = &mut self.io[slot];
        io.held = Some(held);
        io.injected = env
            .vars
            .iter()
            .filter(|(k, _)| worker.declares(k))
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        for tail in &io.tail {
            if let Ok(mut t) = tail.lock() {
                t.clear();
            }
        }
        let req = RunRequest {
            slot,
            run,
            spec: SpawnSpec {
                argv: worker.command.clone(),
                env: pairs,
                cwd: worker.cwd.clone(),
                stdin_null: true,
                capture: true,
                own_group: true,
                reset_signals: DEFAULT_RESET_SIGNALS.to_vec(),
                creds: worker.creds.clone(),
            },
            worker: Arc::from(worker.name.as_str()),
            replica,
            tail: io.tail.clone(),
            fork: self.templates[wi].clone(),
        };
        run_task::start(
            req,
            self.spawner.clone(),
            self.sink.clone(),
            self.redactor.clone(),
            self.runs_tx.clone(),
        );
    }

    fn arm_timer(&self, at: Instant, timer: Timer) {
        if at <= Instant::now() {
            // A zero delay (backoff initial = "0s", a rotation): no timer task, which
            // tokio would round up to its next 1 ms tick, plus a task hop.
            let _ = self.inputs_tx.send(Input::Timer(timer));
            return;
        }
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = tx.send(Input::Timer(timer));
        });
    }

    fn on_run_event(&mut self, ev: RunEvent) {
        let event = match ev {
            RunEvent::Spawned { slot, run, pid } => {
                #[cfg(debug_assertions)]
                self.forced_panic_for_tests();
                if self.fleet.is_current(slot, run) {
                    self.start_probe(slot, pid);
                }
                Event::Spawned { slot, run, pid }
            }
            RunEvent::SpawnFailed { slot, run, reason } => Event::SpawnFailed { slot, run, reason },
            RunEvent::Exited {
                slot,
                run,
                termination,
                leaked,
            } => {
                if !self.fleet.is_current(slot, run) {
                    return;
                }
                self.cancel_probe(slot);
                let (status, class, reason) = self.classify(slot, termination);
                Event::Exited {
                    slot,
                    run,
                    status,
                    class,
                    reason,
                    leaked,
                    // Only an auth failure's rejected values are counted.
                    key: (class == crate::auth::ExitClass::Auth)
                        .then(|| self.key_fingerprint(slot))
                        .flatten(),
                }
            }
        };
        self.step(event);
    }

    /// A fingerprint of the values of the declared keys `slot`'s current run got
    /// (never printed; only compared with the next one's).
    fn key_fingerprint(&self, slot: SlotId) -> Option<u64> {
        let injected = &self.io[slot].injected;
        if injected.is_empty() {
            return None;
        }
        // `injected` follows the built environment's (sorted) order.
        let pairs: Vec<(&str, &[u8])> = injected
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose().as_bytes()))
            .collect();
        Some(self.key_hasher.hash_one(pairs))
    }

    /// Adopts a re-read's snapshot and tells the fleet, per replica, which of its
    /// declared keys changed.
    fn on_reread(&mut self, outcome: reread::Outcome) {
        let result = outcome.result.map(|snapshot| {
            self.snapshot = Arc::new(snapshot);
            // Each replica's environment is built once per re-read, here, and
            // only for the replicas whose changes the fleet looks at.
            (0..self.fleet.len())
                .map(|slot| {
                    if self.fleet.uses_changes(slot) {
                        self.changed_keys(slot)
                    } else {
                        Vec::new()
                    }
                })
                .collect()
        });
        self.step(Event::RereadFinished(result));
    }

    /// Declared keys of `slot` whose value differs from what its current run got,
    /// each with where the new value comes from.
    fn changed_keys(&self, slot: SlotId) -> Vec<KeyChange> {
        let env = self.built_env(slot);
        let old: BTreeMap<&str, &Sensitive> = self.io[slot]
            .injected
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let worker = self.worker_of(slot);
        let mut out = Vec::new();
        for (k, v) in &env.vars {
            if worker.declares(k) && old.get(k.as_str()) != Some(&&v.value) {
                out.push(KeyChange {
                    key: k.clone(),
                    source: v.provenance.to_string(),
                });
            }
        }
        for k in old.keys() {
            if !env.vars.contains_key(*k) {
                out.push(KeyChange {
                    key: (*k).to_string(),
                    source: "removed from every source".into(),
                });
            }
        }
        out
    }

    /// Debug builds only (the tests' binary; never a release): with
    /// `AGENTSUP_DEBUG_PANIC_WITH=KEY`, panics with KEY's loaded value in the
    /// message once a worker's process exists, so the leak canaries can check
    /// what a real panic of `run` prints (the hook redacts it) and that the guard
    /// then leaves no worker behind.
    #[cfg(debug_assertions)]
    fn forced_panic_for_tests(&self) {
        let Ok(key) = std::env::var("AGENTSUP_DEBUG_PANIC_WITH") else {
            return;
        };
        if let Some(entry) = self.snapshot.values.get(&key) {
            panic!(
                "forced panic (AGENTSUP_DEBUG_PANIC_WITH): {key} is {}",
                entry.value.expose()
            );
        }
    }

    /// Publishes a fresh [`Status`]; cheap enough to do after every event.
    fn publish(&self) {
        let now = Instant::now();
        let mut status = self.fleet.status(now);
        status.refresh = self.refresh.status(now);
        self.status_tx.send_replace(Arc::new(status));
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Timer(Timer::ReadyTimeout { slot, run }) => self.on_ready_timeout(slot, run),
            Input::Timer(timer) => self.step(Event::Timer(timer)),
            Input::Reread(outcome) => self.on_reread(*outcome),
            Input::Control(request, tx) => {
                let reply = self.next_reply;
                self.next_reply += 1;
                self.replies.insert(reply, tx);
                self.step(Event::Control { reply, request });
            }
            Input::SourcesChanged => self.step(Event::SourcesChanged),
            Input::RefreshDue { generation } => self.on_refresh_due(generation),
            Input::Watchdog => {
                if let Some(n) = self.systemd.as_mut() {
                    n.ping();
                }
            }
            Input::Ready { slot, run } => self.on_ready(slot, run),
            Input::Notified { slot, run, sender } => self.on_notified(slot, run, sender),
        }
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
        self.step(Event::Start);
        self.arm_refresh();
        self.start_watchdog();
        for ev in early {
            self.step(Event::Signal(ev));
        }
        loop {
            if self.fleet.all_done() {
                break;
            }
            tokio::select! {
                sig = signals.next() => self.step(Event::Signal(sig)),
                Some(ev) = runs_rx.recv() => self.on_run_event(ev),
                Some(input) = inputs_rx.recv() => self.on_input(input),
            }
            self.publish();
            self.notify_systemd();
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
        let (code, line) = self.fleet.outcome();
        tracing::info!("{line}");
        (code, signals)
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
    keys: Option<crate::keys_dir::KeysDir>,
}

/// Runs the dispatcher to completion; returns the exit code, and the signal
/// streams for the last phase (flushing stdout).
async fn supervise(ctx: RunContext) -> Result<(u8, SignalStream)> {
    let (runs_tx, runs_rx) = mpsc::unbounded_channel();
    let sup = &ctx.plan.supervisor;
    let cfg = FleetConfig {
        workers: ctx
            .workers
            .iter()
            .map(|w| WorkerSpec {
                name: w.name.clone(),
                replicas: w.replicas,
                policy: replica_policy(w),
                on_rotation: w.on_rotation,
                ready: w.ready.as_ref().map(|r| (r.timeout, r.describe())),
            })
            .collect(),
        on_give_up: sup.on_give_up,
        shutdown_timeout: sup.shutdown_timeout,
        paced_rereads: ctx
            .plan
            .sources
            .iter()
            .any(|s| matches!(s.kind, crate::plan::SourceKindPlan::Command { .. })),
        config_path: ctx.plan.config_path.display().to_string(),
        pid: std::process::id(),
    };
    let fleet = Fleet::new(cfg, Instant::now());
    let refresh = crate::refresh::Schedule::new(&ctx.plan, &ctx.snapshot, Instant::now());
    let io = (0..fleet.len())
        .map(|_| SlotIo {
            tail: [
                Arc::new(Mutex::new(Tail::default())),
                Arc::new(Mutex::new(Tail::default())),
            ],
            injected: Vec::new(),
            held: None,
            probe_cancel: None,
            notify_refused: false,
            probe_failure: None,
        })
        .collect();
    let d = Dispatcher {
        fleet,
        rng: fastrand::Rng::new(),
        plan: ctx.plan,
        workers: ctx.workers,
        templates: ctx.templates,
        process_env: ctx.process_env,
        snapshot: ctx.snapshot,
        io,
        spawner: ctx.spawner,
        reaper: ctx.reaper,
        sink: ctx.sink,
        redactor: ctx.redactor,
        runs_tx,
        inputs_tx: ctx.inputs_tx,
        status_tx: ctx.status_tx,
        replies: HashMap::new(),
        next_reply: 0,
        key_hasher: std::hash::RandomState::new(),
        keys: ctx.keys,
        refresh,
        refresh_gen: 0,
        systemd: crate::notify::Systemd::from_env(),
        notify_dir: None,
    };
    Ok(d.run(ctx.signals, runs_rx, ctx.inputs_rx).await)
}

/// The replica policy of a worker, from its plan.
pub(crate) fn replica_policy(w: &WorkerPlan) -> replica::Policy {
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
