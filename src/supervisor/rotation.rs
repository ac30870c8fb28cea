//! Re-reads and what follows them: adopting new values, telling which keys of a
//! replica changed, and restarting replicas one at a time (SPEC 5: rotation,
//! SIGHUP and `agentsup reload`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Dispatcher, Event, Input, reread};
use crate::replica;
use crate::secret::Sensitive;
use crate::status::{ControlResponse, RestartReason};

/// Shortest time between the starts of two re-reads, whatever triggers them,
/// when the config has a `command` source. Every re-read runs each `command` source (a vault, `op`, a cloud secret
/// manager, often rate-limited or billed per call); 3 s keeps a loop of `reload`,
/// SIGHUP or auth failures at 20 runs a minute at most, while an operator's reload
/// still waits at most 3 s.
pub(super) const REREAD_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// The same for a re-read a watched source's change asks for.
pub(super) const WATCH_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

impl Dispatcher {
    /// The pause between two re-reads is over: run the one that waited.
    pub(super) fn on_pace_over(&mut self) {
        // A later timer of a re-read that already ran, or nothing waits.
        if !self.reread_deferred || self.reread_pace_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.reread_pace_at = None;
        // Only a watch re-read waits: its shorter pause applies; anything else
        // waiting (a reload, SIGHUP, an auth failure) waits for the longer one.
        let waiting_auth = self.slots.iter().any(|s| s.awaiting_reread);
        if self.watch_triggered && !self.reload_requested && !waiting_auth {
            self.start_watch_reread();
        } else {
            self.start_reread();
        }
    }

    /// A re-read for replicas that failed auth: runs now, or when the pause after
    /// a failed re-read is over (see [`reread::Pacer`]).
    pub(super) fn request_auth_reread(&mut self) {
        let Some(until) = self.reread_pacer.held_until(Instant::now()) else {
            self.start_reread();
            return;
        };
        if self.reread_pacer.defer() {
            self.arm_hold_timer(until);
        }
    }

    fn arm_hold_timer(&self, until: Instant) {
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            let _ = tx.send(Input::RereadHoldOver);
        });
    }

    pub(super) fn on_hold_over(&mut self) {
        // Another re-read failed meanwhile and the pause grew: wait for its end.
        if let Some(until) = self.reread_pacer.held_until(Instant::now()) {
            self.arm_hold_timer(until);
            return;
        }
        // An operator's or a watcher's re-read may have served them already.
        let waiting = self.slots.iter().any(|s| s.awaiting_reread);
        if self.reread_pacer.hold_over() && waiting {
            self.start_reread();
        }
    }

    /// Re-reads every source, now or as soon as the pace allows: whatever asks (an
    /// auth failure, SIGHUP, `agentsup reload`, a watched file), one re-read runs at
    /// a time, at most one more waits (it serves every request made meanwhile), and
    /// two starts are at least [`REREAD_MIN_INTERVAL`] apart, so no loop of
    /// requests can run a vault-style `command` source more often than that.
    pub(super) fn start_reread(&mut self) {
        self.start_reread_paced(REREAD_MIN_INTERVAL);
    }

    /// [`Self::start_reread`] for a watched source that changed: the new value is
    /// news, and the watcher already collapses a burst of changes, so it waits for
    /// [`WATCH_MIN_INTERVAL`] only (a rotation reaches the workers within a second
    /// or two).
    pub(super) fn start_watch_reread(&mut self) {
        self.start_reread_paced(WATCH_MIN_INTERVAL);
    }

    fn start_reread_paced(&mut self, interval: std::time::Duration) {
        if self.reread_in_flight {
            self.reread_queued = true;
            return;
        }
        let now = Instant::now();
        // Only a `command` source costs anything to re-read (a vault, a cloud
        // API); files and the environment are read locally, so a config without
        // one keeps its re-reads immediate (an auth-failure cycle, a rotation).
        let paced = self
            .plan
            .sources
            .iter()
            .any(|s| matches!(s.kind, crate::plan::SourceKindPlan::Command { .. }));
        if let Some(at) = self
            .reread_last_start
            .filter(|_| paced)
            .map(|last| last + interval)
            .filter(|&at| at > now)
        {
            self.reread_deferred = true;
            // One timer per earlier deadline: a watch re-read (1 s) may come
            // after a reload (3 s) armed a later one.
            if self.reread_pace_at.is_none_or(|armed| at < armed) {
                self.reread_pace_at = Some(at);
                tracing::info!(
                    "re-read paced: the last one started {} ago; the next runs in {} and serves every request made until then (at most one re-read every {})",
                    humantime::format_duration(round_ms(now - (at - interval))),
                    humantime::format_duration(round_ms(at - now)),
                    humantime::format_duration(interval)
                );
                let tx = self.inputs_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = tx.send(Input::RereadPaceOver);
                });
            }
            return;
        }
        self.reread_deferred = false;
        self.reread_pace_at = None;
        self.reread_in_flight = true;
        self.reread_last_start = Some(now);
        reread::start(
            self.plan.clone(),
            self.workers.clone(),
            self.process_env.clone(),
            self.reaper.clone(),
            self.inputs_tx.clone(),
        );
    }

    pub(super) fn on_reread(&mut self, outcome: reread::Outcome) {
        self.reread_in_flight = false;
        // A reload or a source change arrived while this re-read ran: it may have
        // read the files before the change, so the reload and watch decisions wait
        // for a fresh re-read, started below.
        let stale = std::mem::take(&mut self.reread_queued);
        let accepted = match outcome.result {
            Ok(snapshot) => {
                self.counters.secret_reloads += 1;
                self.reread_pacer.succeeded();
                self.snapshot = Arc::new(snapshot);
                tracing::info!("re-read sources: values pass the checks");
                true
            }
            Err(why) => {
                self.counters.secret_reload_failures += 1;
                let replies = if stale {
                    Vec::new()
                } else {
                    std::mem::take(&mut self.reload_replies)
                };
                for reply in replies {
                    let _ = reply.send(ControlResponse {
                        ok: false,
                        message: format!(
                            "the new values fail the checks; keeping the old ones: {why}"
                        ),
                        status: None,
                    });
                }
                let hold = self.reread_pacer.failed(Instant::now());
                tracing::warn!(
                    "re-read sources: the new values fail the checks; keeping the old ones and everything running. {why}. Re-reads for auth failures now wait {} (SIGHUP or `agentsup reload` re-read sooner)",
                    humantime::format_duration(hold)
                );
                false
            }
        };
        let waiting: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].awaiting_reread)
            .collect();
        // One incident, not N (SPEC 5): when several replicas restart on the same
        // rotation, spread them over a short window so the fleet does not hit the
        // provider (or the secret store) in lockstep.
        // Each replica's environment is built once per re-read, here.
        let waiting: Vec<(usize, Vec<(String, String)>)> = waiting
            .into_iter()
            .map(|slot| {
                let changed = if accepted {
                    self.changed_keys(slot)
                } else {
                    Vec::new()
                };
                (slot, changed)
            })
            .collect();
        let rotated = waiting.iter().filter(|(_, c)| !c.is_empty()).count();
        let spread =
            std::time::Duration::from_millis(50 * rotated.saturating_sub(1).min(20) as u64);
        for (slot, changed) in waiting {
            self.slots[slot].awaiting_reread = false;
            let label = self.slots[slot].label.clone();
            if changed.is_empty() {
                tracing::info!("{label}: re-read sources: its keys are unchanged");
            }
            for (key, source) in &changed {
                tracing::info!("{label}: re-read sources: {key} changed (now from {source})");
            }
            let changed_keys: Vec<String> = changed.into_iter().map(|(k, _)| k).collect();
            if changed_keys.is_empty() || spread.is_zero() {
                self.drive(
                    slot,
                    Event::RereadDone {
                        changed_keys,
                        at: Instant::now(),
                    },
                );
            } else {
                let delay = spread.mul_f64(fastrand::f64());
                let tx = self.inputs_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Input::RereadDone { slot, changed_keys });
                });
            }
        }
        if accepted {
            // Replicas waiting out an auth backoff restart now if their keys changed
            // (SPEC 5): one re-read serves the whole incident.
            for slot in 0..self.slots.len() {
                let m = &self.slots[slot].machine;
                let waiting = matches!(m.state(), replica::State::AuthBlocked { .. })
                    || (matches!(m.state(), replica::State::Backoff { .. }) && m.auth_streak() > 0);
                let changed = if waiting {
                    self.changed_keys(slot)
                } else {
                    Vec::new()
                };
                if !changed.is_empty() {
                    self.slots[slot].restart_reason = RestartReason::Rotation;
                    let label = self.slots[slot].label.clone();
                    for (key, source) in changed {
                        tracing::info!("{label}: {key} changed (now from {source})");
                    }
                    self.drive(slot, Event::SourcesChanged);
                }
            }
        }
        if stale {
            self.start_reread();
            return;
        }
        let watch_restart = self.watch_triggered
            && self.plan.supervisor.on_rotation == crate::config::OnRotation::Restart;
        self.watch_triggered = false;
        if self.reload_requested || watch_restart {
            let reason = if self.reload_requested {
                RestartReason::Reload
            } else {
                RestartReason::Rotation
            };
            self.reload_requested = false;
            if accepted {
                let n = self.plan_rolling_restart(reason);
                for reply in self.reload_replies.drain(..) {
                    let _ = reply.send(ControlResponse {
                        ok: true,
                        message: format!("sources re-read and checked; restarting {n} replica(s) whose environment changed, one at a time"),
                        status: None,
                    });
                }
            }
        }
    }

    /// Declared keys of `slot` whose value differs from what its last run got, each
    /// with where the new value comes from.
    pub(super) fn changed_keys(&self, slot: usize) -> Vec<(String, String)> {
        let env = self.built_env(slot);
        let s = &self.slots[slot];
        let old: BTreeMap<&str, &Sensitive> =
            s.injected.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let worker = &self.workers[s.worker];
        let mut out = Vec::new();
        for (k, v) in &env.vars {
            if !worker.declares(k) {
                continue;
            }
            if old.get(k.as_str()) != Some(&&v.value) {
                out.push((k.clone(), v.provenance.to_string()));
            }
        }
        for k in old.keys() {
            if !env.vars.contains_key(*k) {
                out.push(((*k).to_string(), "removed from every source".into()));
            }
        }
        out
    }

    pub(super) fn plan_rolling_restart(&mut self, reason: RestartReason) -> usize {
        let mut list = Vec::new();
        for slot in 0..self.slots.len() {
            // Starting replicas count too: their environment was built from the
            // old snapshot a moment ago.
            if !matches!(
                self.slots[slot].machine.state(),
                replica::State::Running { .. } | replica::State::Starting
            ) {
                continue;
            }
            let changed = self.changed_keys(slot);
            if !changed.is_empty() {
                let label = &self.slots[slot].label;
                for (key, source) in &changed {
                    tracing::info!("{label}: {key} changed (now from {source})");
                }
                list.push(slot);
            }
        }
        if list.is_empty() {
            tracing::info!(
                "{reason}: no running replica's environment changed; nothing to restart"
            );
            return 0;
        }
        for &slot in &list {
            self.slots[slot].restart_reason = reason;
        }
        let n = list.len();
        tracing::info!(
            "{reason}: restarting {n} replica(s) whose environment changed, one at a time"
        );
        self.queue_rolling(list);
        n
    }

    /// Adds replicas to the one-at-a-time restart queue.
    pub(super) fn queue_rolling(&mut self, list: Vec<usize>) {
        for slot in list {
            if !self.rolling.contains(&slot) && self.rolling_current != Some(slot) {
                self.rolling.insert(0, slot);
            }
        }
        self.next_rolling();
    }

    pub(super) fn next_rolling(&mut self) {
        if self.shutting_down || self.rolling_current.is_some() {
            return;
        }
        if let Some(slot) = self.rolling.pop() {
            self.rolling_current = Some(slot);
            self.drive(slot, Event::RestartRequested { at: Instant::now() });
        }
    }
}
