//! The test harness of [`Fleet`]: plays the dispatcher with plain values (no
//! process, no sleep: time is an `Instant` the test advances, randomness a seeded
//! `fastrand::Rng`).

use std::time::{Duration, Instant};

use super::*;
use crate::config::OnRotation;
use crate::replica::{Backoff, RestartPolicy};
use crate::replica::{Policy, StopSignal};
use crate::status::{ControlRequest, ControlResponse};

/// The policy the tests use: no jitter, 1 s doubling to 8 s, three crashes.
pub(super) fn policy() -> Policy {
    Policy {
        restart: RestartPolicy::OnFailure,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(30),
        },
        max_restarts: 3,
        auth_max_delay: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(2),
    }
}

pub(super) fn config(workers: &[(&str, u32)]) -> FleetConfig {
    FleetConfig {
        workers: workers
            .iter()
            .map(|&(name, replicas)| WorkerSpec {
                name: name.into(),
                replicas,
                policy: policy(),
                on_rotation: OnRotation::Restart,
                ready: None,
            })
            .collect(),
        on_give_up: OnGiveUp::Keep,
        shutdown_timeout: Duration::from_secs(10),
        paced_rereads: false,
        config_path: "/srv/supervisor.toml".into(),
        pid: 1,
    }
}

/// Plays the dispatcher: records every action, keeps the armed timers and the
/// spawns not answered yet, and advances time.
pub(super) struct H {
    pub fleet: Fleet,
    pub now: Instant,
    pub rng: fastrand::Rng,
    /// Armed timers, in arming order.
    pub timers: Vec<(Instant, Timer)>,
    /// Spawns not answered yet.
    pub spawns: Vec<(SlotId, u64)>,
    /// Every action so far.
    pub all: Vec<Action>,
    pub t0: Instant,
    next_pid: u32,
}

impl H {
    pub(super) fn new(workers: &[(&str, u32)]) -> H {
        H::with(config(workers))
    }

    pub(super) fn with(cfg: FleetConfig) -> H {
        let now = Instant::now();
        H {
            fleet: Fleet::new(cfg, now),
            now,
            rng: fastrand::Rng::with_seed(7),
            timers: Vec::new(),
            spawns: Vec::new(),
            all: Vec::new(),
            t0: now,
            next_pid: 100,
        }
    }

    /// Steps the fleet; returns this step's actions.
    pub(super) fn step(&mut self, ev: Event) -> Vec<Action> {
        let out = self.fleet.step(ev, self.now, &mut self.rng);
        for a in &out {
            match a {
                Action::ArmTimer { at, timer } => self.timers.push((*at, timer.clone())),
                Action::Spawn { slot, run } => self.spawns.push((*slot, *run)),
                _ => {}
            }
        }
        self.all.extend(out.iter().cloned());
        out
    }

    /// Starts the fleet and answers every spawn: all running.
    pub(super) fn started(workers: &[(&str, u32)]) -> H {
        let mut h = H::new(workers);
        h.step(Event::Start);
        h.settle();
        h
    }

    /// Answers the pending spawn of `slot` with a process; returns its pid.
    pub(super) fn spawned(&mut self, slot: SlotId) -> u32 {
        let i = self
            .spawns
            .iter()
            .position(|&(s, _)| s == slot)
            .unwrap_or_else(|| panic!("no spawn pending for slot {slot}: {:?}", self.spawns));
        let (_, run) = self.spawns.remove(i);
        self.next_pid += 1;
        let pid = self.next_pid;
        self.step(Event::Spawned { slot, run, pid });
        pid
    }

    /// Answers every pending spawn, in order.
    pub(super) fn settle(&mut self) {
        while let Some(&(slot, _)) = self.spawns.first() {
            self.spawned(slot);
        }
    }

    /// The current run of `slot` exits with `class` (key fingerprint `key`).
    pub(super) fn exit_key(
        &mut self,
        slot: SlotId,
        class: ExitClass,
        key: Option<u64>,
    ) -> Vec<Action> {
        let run = self.fleet.slots[slot].run;
        let code = match class {
            ExitClass::Ok => 0,
            ExitClass::Auth => 77,
            ExitClass::Config => 78,
            ExitClass::Crash => 1,
        };
        self.step(Event::Exited {
            slot,
            run,
            status: Termination::Exited(code),
            class,
            reason: format!("exit {code}"),
            leaked: false,
            key,
        })
    }

    pub(super) fn exit(&mut self, slot: SlotId, class: ExitClass) -> Vec<Action> {
        self.exit_key(slot, class, Some(1))
    }

    /// Moves time forward by `d`, firing every timer that falls due (in time
    /// order, including those armed meanwhile).
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let due = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= end)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let (at, timer) = self.timers.remove(i);
            self.now = self.now.max(at);
            self.step(Event::Timer(timer));
        }
        self.now = end;
    }

    pub(super) fn state(&self, slot: SlotId) -> StateKind {
        self.fleet.state(slot)
    }

    pub(super) fn run(&self, slot: SlotId) -> u64 {
        self.fleet.slots[slot].run
    }

    pub(super) fn pid(&self, slot: SlotId) -> Option<u32> {
        self.fleet.slots[slot].pid
    }

    /// Every log line so far.
    pub(super) fn lines(&self) -> Vec<String> {
        self.all
            .iter()
            .filter_map(|a| match a {
                Action::Log { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Signals sent so far: `(slot, sig)`.
    pub(super) fn signals(&self) -> Vec<(SlotId, StopSignal)> {
        self.all
            .iter()
            .filter_map(|a| match a {
                Action::Signal { slot, sig, .. } => Some((*slot, *sig)),
                _ => None,
            })
            .collect()
    }

    /// Spawns requested so far, by slot.
    pub(super) fn spawn_count(&self, slot: SlotId) -> usize {
        self.all
            .iter()
            .filter(|a| matches!(a, Action::Spawn { slot: s, .. } if *s == slot))
            .count()
    }

    /// Re-reads requested so far.
    pub(super) fn rereads(&self) -> usize {
        self.all.iter().filter(|a| **a == Action::Reread).count()
    }

    /// Transitions of `slot` so far, as `from->to`.
    pub(super) fn transitions(&self, slot: SlotId) -> Vec<String> {
        let (w, r) = self.fleet.slot(slot);
        let name = &self.fleet.cfg.workers[w].name;
        self.all
            .iter()
            .filter_map(|a| match a {
                Action::Transition(t) if t.worker == *name && t.replica == r => {
                    Some(format!("{}->{}", t.from, t.to))
                }
                _ => None,
            })
            .collect()
    }

    pub(super) fn restarts(&self, worker: &str, reason: RestartReason) -> u64 {
        self.fleet
            .counters
            .restarts
            .get(worker)
            .and_then(|m| m.get(&reason))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn control(&mut self, request: ControlRequest) -> ControlResponse {
        let out = self.step(Event::Control { reply: 9, request });
        out.into_iter()
            .find_map(|a| match a {
                Action::Reply { to: 9, response } => Some(response),
                _ => None,
            })
            .expect("an answer")
    }
}
