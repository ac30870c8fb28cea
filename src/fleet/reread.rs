//! The re-read coordinator: whatever asks (an auth failure, SIGHUP, `agentsup
//! reload`, a watched file), one re-read runs at a time, at most one more waits
//! (it serves every request made meanwhile), two starts are at least
//! [`REREAD_MIN_INTERVAL`] apart when a `command` source makes re-reads costly,
//! and automatic ones are held after failed ones ([`super::Pacer`]). What follows
//! a re-read: waiting replicas learn their changed keys (spread over a short
//! window when several restart on one rotation), and a reload or a watched change
//! restarts the running replicas whose environment changed, one at a time.

use std::time::{Duration, Instant};

use super::{Action, Cx, Fleet, KeyChange, ReplyId, SlotId, Timer, round_ms};
use crate::config::OnRotation;
use crate::replica::{self, StateKind};
use crate::status::{ControlResponse, RestartReason};

/// Shortest time between the starts of two re-reads, whatever triggers them, when
/// the config has a `command` source. Every re-read runs each `command` source (a
/// vault, `op`, a cloud secret manager, often rate-limited or billed per call); 3 s
/// keeps a loop of `reload`, SIGHUP or auth failures at 20 runs a minute at most,
/// while an operator's reload still waits at most 3 s.
pub(crate) const REREAD_MIN_INTERVAL: Duration = Duration::from_secs(3);

/// The same for a re-read a watched source's change asks for: the new value is
/// news, and the watcher already collapses a burst of changes, so a rotation
/// reaches the workers within a second or two.
pub(crate) const WATCH_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The coordinator's state.
#[derive(Debug, Default)]
pub(super) struct Coordinator {
    in_flight: bool,
    /// Another re-read was asked for while one ran; run it when that one ends.
    queued: bool,
    /// When the last re-read started: the next waits for the minimum interval.
    last_start: Option<Instant>,
    /// A re-read waits for the minimum interval.
    deferred: bool,
    /// When the earliest armed pace timer fires.
    pace_at: Option<Instant>,
    /// Holds auth-triggered re-reads back after failed ones.
    pacer: super::Pacer,
    /// A SIGHUP or `reload` re-read is pending; restart replicas whose environment
    /// changed.
    pub(super) reload_requested: bool,
    /// The pending re-read was started by a watched source changing.
    pub(super) watch_triggered: bool,
    /// `agentsup reload` callers waiting for the re-read's outcome.
    pub(super) reload_replies: Vec<ReplyId>,
}

impl Fleet {
    /// The pause between two re-reads is over: run the one that waited.
    pub(super) fn on_pace_over(&mut self, cx: &mut Cx<'_>) {
        let r = &mut self.reread;
        // A later timer of a re-read that already ran, or nothing waits.
        if !r.deferred || r.pace_at.is_some_and(|at| at > cx.now) {
            return;
        }
        r.pace_at = None;
        // Only a watch re-read waits: its shorter pause applies; anything else
        // waiting (a reload, SIGHUP, an auth failure) waits for the longer one.
        let waiting_auth = self.slots.iter().any(|s| s.awaiting_reread);
        if r.watch_triggered && !r.reload_requested && !waiting_auth {
            self.start_reread_paced(WATCH_MIN_INTERVAL, cx);
        } else {
            self.start_reread(cx);
        }
    }

    /// A re-read for replicas that failed auth: runs now, or when the pause after
    /// a failed re-read is over.
    pub(super) fn request_auth_reread(&mut self, cx: &mut Cx<'_>) {
        let Some(until) = self.reread.pacer.held_until(cx.now) else {
            self.start_reread(cx);
            return;
        };
        if self.reread.pacer.defer() {
            cx.out.push(Action::ArmTimer {
                at: until,
                timer: Timer::RereadHoldOver,
            });
        }
    }

    pub(super) fn on_hold_over(&mut self, cx: &mut Cx<'_>) {
        // Another re-read failed meanwhile and the pause grew: wait for its end.
        if let Some(until) = self.reread.pacer.held_until(cx.now) {
            cx.out.push(Action::ArmTimer {
                at: until,
                timer: Timer::RereadHoldOver,
            });
            return;
        }
        // An operator's or a watcher's re-read may have served them already.
        let waiting = self.slots.iter().any(|s| s.awaiting_reread);
        if self.reread.pacer.hold_over() && waiting {
            self.start_reread(cx);
        }
    }

    /// Re-reads every source, now or as soon as the pace allows.
    pub(super) fn start_reread(&mut self, cx: &mut Cx<'_>) {
        self.start_reread_paced(REREAD_MIN_INTERVAL, cx);
    }

    pub(super) fn start_reread_paced(&mut self, interval: Duration, cx: &mut Cx<'_>) {
        let r = &mut self.reread;
        if r.in_flight {
            r.queued = true;
            return;
        }
        let now = cx.now;
        // Only a `command` source costs anything to re-read (a vault, a cloud
        // API); files and the environment are read locally, so a config without
        // one keeps its re-reads immediate (an auth-failure cycle, a rotation).
        if let Some(at) = r
            .last_start
            .filter(|_| self.cfg.paced_rereads)
            .map(|last| last + interval)
            .filter(|&at| at > now)
        {
            r.deferred = true;
            // One timer per earlier deadline: a watch re-read (1 s) may come after
            // a reload (3 s) armed a later one.
            if r.pace_at.is_none_or(|armed| at < armed) {
                r.pace_at = Some(at);
                cx.info(format!(
                    "re-read paced: the last one started {} ago; the next runs in {} and serves every request made until then (at most one re-read every {})",
                    humantime::format_duration(round_ms(now - (at - interval))),
                    humantime::format_duration(round_ms(at - now)),
                    humantime::format_duration(interval)
                ));
                cx.out.push(Action::ArmTimer {
                    at,
                    timer: Timer::RereadPaceOver,
                });
            }
            return;
        }
        r.deferred = false;
        r.pace_at = None;
        r.in_flight = true;
        r.last_start = Some(now);
        cx.out.push(Action::Reread);
    }

    /// A re-read finished: `changes` holds, per slot, the declared keys whose
    /// values differ from what its current run got.
    pub(super) fn on_reread(
        &mut self,
        result: Result<Vec<Vec<KeyChange>>, String>,
        cx: &mut Cx<'_>,
    ) {
        self.reread.in_flight = false;
        // The runs the changes were computed against: a replica started after that
        // (below) already has the new values.
        let runs: Vec<u64> = self.slots.iter().map(|s| s.run).collect();
        // A reload or a source change arrived while this re-read ran: it may have
        // read the files before the change, so the reload and watch decisions wait
        // for a fresh re-read, started below.
        let stale = std::mem::take(&mut self.reread.queued);
        let changes = match result {
            Ok(changes) => {
                self.counters.secret_reloads += 1;
                self.reread.pacer.succeeded();
                cx.info("re-read sources: values pass the checks");
                cx.out.push(Action::RereadOutcome {
                    accepted: true,
                    why: None,
                });
                Some(changes)
            }
            Err(why) => {
                self.counters.secret_reload_failures += 1;
                if !stale {
                    for to in std::mem::take(&mut self.reread.reload_replies) {
                        cx.out.push(Action::Reply {
                            to,
                            response: ControlResponse {
                                ok: false,
                                message: format!(
                                    "the new values fail the checks; keeping the old ones: {why}"
                                ),
                                status: None,
                            },
                        });
                    }
                }
                cx.out.push(Action::RereadOutcome {
                    accepted: false,
                    why: Some(why.clone()),
                });
                let hold = self.reread.pacer.failed(cx.now);
                cx.warn(format!(
                    "re-read sources: the new values fail the checks; keeping the old ones and everything running. {why}. Re-reads for auth failures now wait {} (SIGHUP or `agentsup reload` re-read sooner)",
                    humantime::format_duration(hold)
                ));
                None
            }
        };
        let accepted = changes.is_some();
        let changes: Vec<Vec<KeyChange>> = changes.unwrap_or_default();
        self.deliver_reread(&changes, cx);
        // Replicas restarted below, for the summary line of a rotation or reload.
        let mut restarted = 0;
        // A re-read that is not the watcher's (an auth failure's, queued behind
        // another) may be the first to see a rotation: it says so before the
        // per-replica lines, and sums them up after, so the story reads in order
        // whichever re-read gets there first. A rotation or reload summary
        // (plan_rolling_restart) counts them otherwise.
        let announce = !self.reread.watch_triggered && !self.reread.reload_requested;
        if accepted {
            // Key files first: a replica restarted below (or by the auth protocol)
            // must find them holding the new values.
            cx.out.push(Action::ApplyInPlace);
            // Replicas waiting out an auth backoff restart now if their keys changed
            // (SPEC 5): one re-read serves the whole incident.
            for (slot, &run) in runs.iter().enumerate() {
                let waiting = self.waits_on_rejected_key(slot);
                let changed = changed_of(&changes, slot);
                if waiting && !changed.is_empty() && self.slots[slot].run == run {
                    if announce && restarted == 0 {
                        cx.info(
                            "re-read sources: new values for replicas waiting on a rejected key",
                        );
                    }
                    self.slots[slot].restart_reason = RestartReason::Rotation;
                    tell_changes(&self.slots[slot].label, changed, cx);
                    self.drive(slot, replica::Event::SourcesChanged, cx);
                    restarted += 1;
                }
            }
        }
        if announce && restarted > 0 {
            cx.info(format!("rotation: {}", waiting_restarted(restarted)));
        }
        if stale {
            self.start_reread(cx);
            return;
        }
        // Which workers restart is decided per worker (`on_rotation`) in
        // `plan_rolling_restart`.
        let watch_restart = self.reread.watch_triggered;
        self.reread.watch_triggered = false;
        if self.reread.reload_requested || watch_restart {
            let reason = if self.reread.reload_requested {
                RestartReason::Reload
            } else {
                RestartReason::Rotation
            };
            self.reread.reload_requested = false;
            if accepted {
                let n = self.plan_rolling_restart(reason, restarted, &changes, &runs, cx);
                for to in std::mem::take(&mut self.reread.reload_replies) {
                    cx.out.push(Action::Reply {
                        to,
                        response: ControlResponse {
                            ok: true,
                            message: format!("sources re-read and checked; restarting {n} replica(s) whose environment changed, one at a time"),
                            status: None,
                        },
                    });
                }
            }
        }
    }

    /// Tells every replica waiting for this re-read what changed for it. One
    /// incident, not N (SPEC 5): when several replicas restart on the same
    /// rotation, their restarts are spread over up to ~1 s (50 ms per extra
    /// replica), so the fleet does not hit the provider (or the secret store) in
    /// lockstep.
    fn deliver_reread(&mut self, changes: &[Vec<KeyChange>], cx: &mut Cx<'_>) {
        let waiting: Vec<SlotId> = (0..self.slots.len())
            .filter(|&i| self.slots[i].awaiting_reread)
            .collect();
        let rotated = waiting
            .iter()
            .filter(|&&s| !changed_of(changes, s).is_empty())
            .count();
        let spread = Duration::from_millis(50 * rotated.saturating_sub(1).min(20) as u64);
        for slot in waiting {
            self.slots[slot].awaiting_reread = false;
            let label = self.slots[slot].label.clone();
            let changed = changed_of(changes, slot);
            if changed.is_empty() {
                cx.info(format!("{label}: re-read sources: its keys are unchanged"));
            }
            tell_changes(&format!("{label}: re-read sources"), changed, cx);
            let changed_keys: Vec<String> = changed.iter().map(|c| c.key.clone()).collect();
            if changed_keys.is_empty() || spread.is_zero() {
                let at = cx.now;
                self.drive(slot, replica::Event::RereadDone { changed_keys, at }, cx);
            } else {
                let delay = spread.mul_f64(cx.rng.f64());
                cx.out.push(Action::ArmTimer {
                    at: cx.now + delay,
                    timer: Timer::RereadDone { slot, changed_keys },
                });
            }
        }
    }

    /// Queues the running (and starting) replicas whose environment changed for a
    /// one-at-a-time restart, for the workers whose `on_rotation` restarts on
    /// `reason`; returns how many. `restarted`: replicas this re-read already
    /// restarted from a backoff, which the summary line counts so that it does not
    /// say nothing changed (issue 15).
    fn plan_rolling_restart(
        &mut self,
        reason: RestartReason,
        restarted: usize,
        changes: &[Vec<KeyChange>],
        runs: &[u64],
        cx: &mut Cx<'_>,
    ) -> usize {
        let mut list = Vec::new();
        let mut in_place = 0;
        for (slot, &run) in runs.iter().enumerate() {
            // Starting replicas count too: their environment was built from the
            // old snapshot a moment ago.
            // A replica started since the re-read (an auth failure's restart
            // above) was built from the new snapshot.
            if !matches!(self.state(slot), StateKind::Running | StateKind::Starting)
                || self.slots[slot].run != run
            {
                continue;
            }
            if !restarts_on(
                self.cfg.workers[self.slots[slot].worker].on_rotation,
                reason,
            ) {
                in_place += 1;
                continue;
            }
            let changed = changed_of(changes, slot);
            if !changed.is_empty() {
                tell_changes(&self.slots[slot].label, changed, cx);
                list.push(slot);
            }
        }
        let waited = match restarted {
            0 => String::new(),
            n => format!("{}; ", waiting_restarted(n)),
        };
        if list.is_empty() {
            if restarted == 0 && in_place == 0 {
                cx.info(format!(
                    "{reason}: every running replica already has these values; nothing to restart"
                ));
            } else if in_place == 0 {
                cx.info(format!(
                    "{reason}: {waited}no running replica needs a restart"
                ));
            } else {
                cx.info(format!(
                    "{reason}: {waited}nothing to restart (the other running replicas take new values by on_rotation = \"file\", \"signal\" or \"next-start\")"
                ));
            }
            return 0;
        }
        for &slot in &list {
            self.slots[slot].restart_reason = reason;
        }
        let n = list.len();
        cx.info(format!(
            "{reason}: {waited}restarting {n} replica(s) whose environment changed, one at a time"
        ));
        self.queue_rolling(list, reason, cx);
        n
    }
}

impl Fleet {
    /// Whether a finished re-read's changed keys for `slot` are used at all: by
    /// a replica waiting for the re-read, one waiting on a rejected key, or a
    /// running or starting one (a rotation or reload may restart it). The
    /// dispatcher builds environments to compare only for these.
    pub(crate) fn uses_changes(&self, slot: SlotId) -> bool {
        self.slots[slot].awaiting_reread
            || self.waits_on_rejected_key(slot)
            || matches!(self.state(slot), StateKind::Running | StateKind::Starting)
    }

    /// Auth-blocked, or backing off after an auth failure.
    fn waits_on_rejected_key(&self, slot: SlotId) -> bool {
        let m = &self.slots[slot].machine;
        matches!(m.state(), replica::State::AuthBlocked { .. })
            || (matches!(m.state(), replica::State::Backoff { .. }) && m.auth_streak() > 0)
    }
}

/// `slot`'s changed keys (none when the re-read was refused).
fn changed_of(changes: &[Vec<KeyChange>], slot: SlotId) -> &[KeyChange] {
    changes.get(slot).map_or(&[], Vec::as_slice)
}

/// Whether a running replica of a worker with this `on_rotation` restarts when its
/// keys changed, for a re-read asked by `reason`: a watched change or a refresh
/// (`rotation`) restarts only `restart` workers; a reload (`reload`, SIGHUP) also
/// `next-start` ones, as it always did. `file` and `signal` workers took the new
/// values in place ([`Action::ApplyInPlace`]).
fn restarts_on(mode: OnRotation, reason: RestartReason) -> bool {
    match mode {
        OnRotation::Restart => true,
        OnRotation::NextStart => reason != RestartReason::Rotation,
        OnRotation::File | OnRotation::Signal => false,
    }
}

/// "2 waiting replicas restarted with the new values", for the summary lines.
fn waiting_restarted(n: usize) -> String {
    match n {
        1 => "1 waiting replica restarted with the new values".to_owned(),
        n => format!("{n} waiting replicas restarted with the new values"),
    }
}

/// One line per changed key of a replica: "a.1: OPENAI_API_KEY changed (now from
/// secrets/)". Names and sources only, never values.
fn tell_changes(label: &str, changed: &[KeyChange], cx: &mut Cx<'_>) {
    for c in changed {
        cx.info(format!(
            "{label}: {} changed (now from {})",
            c.key, c.source
        ));
    }
}
