//! Unit tests of [`Fleet`] across replicas: re-read coalescing and pacing, auth
//! failures, the rotation spread, rolling restarts (harness in `tests.rs`).

use std::time::Duration;

use super::harness::{H, config};
use super::*;
use crate::config::OnRotation;
use crate::replica::StopSignal;
use crate::signals::SignalEvent;
use crate::status::ControlRequest;

fn changed(key: &str) -> Vec<KeyChange> {
    vec![KeyChange {
        key: key.into(),
        source: "dir /run/secrets".into(),
    }]
}

/// A re-read's result where `slots` got a new `OPENAI_API_KEY`.
fn rotated(h: &H, slots: &[SlotId]) -> Event {
    Event::RereadFinished(Ok((0..h.fleet.len())
        .map(|s| {
            if slots.contains(&s) {
                changed("OPENAI_API_KEY")
            } else {
                Vec::new()
            }
        })
        .collect()))
}

fn unchanged(h: &H) -> Event {
    rotated(h, &[])
}

#[test]
fn an_auth_failure_rereads_once_for_replicas_failing_together() {
    let mut h = H::started(&[("a", 3)]);
    h.exit(0, ExitClass::Auth);
    assert_eq!(h.rereads(), 1);
    // Two more fail while it runs: one more re-read serves both, after it.
    h.exit(1, ExitClass::Auth);
    h.exit(2, ExitClass::Auth);
    assert_eq!(h.rereads(), 1);
    let ev = unchanged(&h);
    h.step(ev);
    assert_eq!(h.rereads(), 2, "the queued re-read runs once");
    let ev = unchanged(&h);
    h.step(ev);
    assert_eq!(h.rereads(), 2);
    assert_eq!(h.fleet.counters.auth_failures["a"], 3);
    assert_eq!(h.fleet.counters.secret_reloads, 2);
}

#[test]
fn auth_backoff_sequence_is_backoff_backoff_then_auth_blocked_with_its_delays() {
    let mut h = H::started(&[("a", 1)]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        h.now += Duration::from_millis(300);
        h.exit(0, ExitClass::Auth);
        let ev = unchanged(&h);
        let out = h.step(ev);
        let delay = out
            .iter()
            .find_map(|a| match a {
                Action::Transition(t) => t.delay,
                _ => None,
            })
            .expect("a delay");
        seen.push((h.state(0), delay.as_secs()));
        h.advance(delay);
        h.spawned(0);
    }
    assert_eq!(
        seen,
        [
            (StateKind::Backoff, 1),
            (StateKind::Backoff, 2),
            (StateKind::AuthBlocked, 4),
            (StateKind::AuthBlocked, 8),
        ]
    );
    assert_eq!(h.restarts("a", RestartReason::Auth), 4);
}

#[test]
fn a_rotated_key_restarts_a_waiting_replica_at_once() {
    let mut h = H::started(&[("a", 1)]);
    h.exit(0, ExitClass::Auth);
    let ev = rotated(&h, &[0]);
    h.step(ev);
    assert_eq!(h.state(0), StateKind::Starting);
    assert!(h.lines().contains(
        &"a.0: re-read sources: OPENAI_API_KEY changed (now from dir /run/secrets)".into()
    ));
    h.spawned(0);
    assert_eq!(h.restarts("a", RestartReason::Auth), 1);
}

#[test]
fn a_rotation_spreads_a_fleets_restarts_over_50_ms_per_extra_replica() {
    let mut h = H::started(&[("a", 4)]);
    for slot in 0..4 {
        h.exit(slot, ExitClass::Auth);
    }
    assert_eq!(h.rereads(), 1);
    // One re-read serves all four, and finds a new key for each.
    let ev = rotated(&h, &[0, 1, 2, 3]);
    let start = h.now;
    let out = h.step(ev);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Spawn { .. })),
        "{out:?}"
    );
    let delays: Vec<Duration> = h
        .timers
        .iter()
        .filter(|(_, t)| matches!(t, Timer::RereadDone { .. }))
        .map(|(at, _)| *at - start)
        .collect();
    assert_eq!(delays.len(), 4);
    assert!(
        delays.iter().all(|d| *d < Duration::from_millis(150)),
        "{delays:?}"
    );
    assert!(delays.windows(2).any(|w| w[0] != w[1]), "{delays:?}");
    h.advance(Duration::from_millis(150));
    for slot in 0..4 {
        assert_eq!(h.state(slot), StateKind::Starting);
    }
}

#[test]
fn rereads_with_a_command_source_start_at_least_3_s_apart() {
    let mut cfg = config(&[("a", 1)]);
    cfg.paced_rereads = true;
    let mut h = H::with(cfg);
    h.step(Event::Start);
    h.settle();
    h.step(Event::Signal(SignalEvent::Reload));
    let ev = unchanged(&h);
    h.step(ev);
    h.now += Duration::from_secs(1);
    // Three requests within the pause: one re-read serves them, one timer.
    h.step(Event::Signal(SignalEvent::Reload));
    h.step(Event::Control {
        reply: 3,
        request: ControlRequest::Reload,
    });
    h.step(Event::Signal(SignalEvent::Reload));
    assert_eq!(h.rereads(), 1);
    let pace: Vec<_> = h
        .timers
        .iter()
        .filter(|(_, t)| *t == Timer::RereadPaceOver)
        .collect();
    assert_eq!(pace.len(), 1);
    assert_eq!(pace[0].0, h.t0 + Duration::from_secs(3));
    assert!(
        h.lines()
            .iter()
            .any(|l| l
                .starts_with("re-read paced: the last one started 1s ago; the next runs in 2s"))
    );
    h.advance(Duration::from_millis(1999));
    assert_eq!(h.rereads(), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.rereads(), 2);
}

#[test]
fn without_a_command_source_rereads_are_not_paced() {
    let mut h = H::started(&[("a", 1)]);
    h.step(Event::Signal(SignalEvent::Reload));
    let ev = unchanged(&h);
    h.step(ev);
    h.step(Event::Signal(SignalEvent::Reload));
    assert_eq!(h.rereads(), 2);
}

#[test]
fn a_watched_change_waits_only_1_s_after_the_last_reread() {
    let mut cfg = config(&[("a", 1)]);
    cfg.paced_rereads = true;
    let mut h = H::with(cfg);
    h.step(Event::Start);
    h.settle();
    h.step(Event::SourcesChanged);
    let ev = unchanged(&h);
    h.step(ev);
    h.step(Event::SourcesChanged);
    assert_eq!(h.rereads(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.rereads(), 2);
}

#[test]
fn a_failed_reread_holds_auth_rereads_1_s_then_2_s() {
    let mut h = H::started(&[("a", 2)]);
    h.exit(0, ExitClass::Auth);
    let out = h.step(Event::RereadFinished(Err("OPENAI_API_KEY: empty".into())));
    assert!(out.iter().any(|a| matches!(a, Action::Log { level: Level::Warn, message } if message.contains("now wait 1s"))));
    assert_eq!(h.fleet.counters.secret_reload_failures, 1);
    h.now += Duration::from_millis(500);
    h.exit(1, ExitClass::Auth);
    assert_eq!(h.rereads(), 1, "held");
    h.advance(Duration::from_millis(499));
    assert_eq!(h.rereads(), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.rereads(), 2, "runs when the hold of 1 s ends");
    h.step(Event::RereadFinished(Err("still empty".into())));
    h.settle();
    h.now += Duration::from_millis(500);
    h.exit(0, ExitClass::Auth);
    assert_eq!(h.rereads(), 2, "held for 2 s now");
    h.advance(Duration::from_millis(1499));
    assert_eq!(h.rereads(), 2);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.rereads(), 3);
    // A re-read that succeeds ends the holds.
    let ev = unchanged(&h);
    h.step(ev);
    h.settle();
    h.exit(1, ExitClass::Auth);
    assert_eq!(h.rereads(), 4);
}

#[test]
fn a_refused_reload_is_answered_and_restarts_nothing() {
    let mut h = H::started(&[("a", 2)]);
    h.step(Event::Control {
        reply: 4,
        request: ControlRequest::Reload,
    });
    let out = h.step(Event::RereadFinished(Err("K: a placeholder".into())));
    let Some(Action::Reply { to: 4, response }) =
        out.iter().find(|a| matches!(a, Action::Reply { .. }))
    else {
        panic!("{out:?}")
    };
    assert!(!response.ok);
    assert_eq!(
        response.message,
        "the new values fail the checks; keeping the old ones: K: a placeholder"
    );
    assert!(h.signals().is_empty());
}

#[test]
fn a_reload_restarts_changed_replicas_one_at_a_time_in_order() {
    let mut h = H::started(&[("a", 3), ("b", 1)]);
    h.step(Event::Control {
        reply: 1,
        request: ControlRequest::Reload,
    });
    let ev = rotated(&h, &[0, 2, 3]);
    let out = h.step(ev);
    assert!(out.iter().any(|a| matches!(a, Action::Reply { to: 1, response } if response.message == "sources re-read and checked; restarting 3 replica(s) whose environment changed, one at a time")));
    let mut order = Vec::new();
    for _ in 0..3 {
        let stops: Vec<SlotId> = h.signals().iter().map(|s| s.0).collect();
        assert_eq!(stops.len(), order.len() + 1, "one at a time: {stops:?}");
        let slot = *stops.last().unwrap();
        order.push(slot);
        h.exit(slot, ExitClass::Ok);
        h.spawned(slot);
    }
    assert_eq!(order, [0, 2, 3]);
    assert_eq!(h.restarts("a", RestartReason::Reload), 2);
    assert_eq!(h.restarts("b", RestartReason::Reload), 1);
    assert_eq!(h.spawn_count(1), 1, "unchanged replica untouched");
}

#[test]
fn a_reload_during_a_reread_waits_for_a_fresh_one() {
    let mut h = H::started(&[("a", 1)]);
    h.exit(0, ExitClass::Auth);
    h.step(Event::Signal(SignalEvent::Reload));
    // The running re-read may have read the files before the change.
    let ev = unchanged(&h);
    h.step(ev);
    assert_eq!(h.rereads(), 2);
}

#[test]
fn a_watched_change_restarts_by_each_workers_on_rotation_and_a_reload_also_next_start() {
    let modes = [
        OnRotation::Restart,
        OnRotation::NextStart,
        OnRotation::File,
        OnRotation::Signal,
    ];
    let mut cfg = config(&[("r", 1), ("n", 1), ("f", 1), ("s", 1)]);
    for (w, mode) in cfg.workers.iter_mut().zip(modes) {
        w.on_rotation = mode;
    }
    let mut h = H::with(cfg);
    h.step(Event::Start);
    h.settle();
    h.step(Event::SourcesChanged);
    let ev = rotated(&h, &[0, 1, 2, 3]);
    let out = h.step(ev);
    assert!(out.contains(&Action::ApplyInPlace), "{out:?}");
    assert_eq!(
        h.signals(),
        [(0, StopSignal::Stop)],
        "only `restart` restarts"
    );
    assert!(h.lines().contains(
        &"rotation: restarting 1 replica(s) whose environment changed, one at a time".into()
    ));
    h.exit(0, ExitClass::Ok);
    h.spawned(0);
    assert_eq!(h.restarts("r", RestartReason::Rotation), 1);
    // A reload restarts `next-start` workers too, never `file` or `signal` ones.
    h.step(Event::Signal(SignalEvent::Reload));
    let ev = rotated(&h, &[1, 2, 3]);
    h.step(ev);
    assert_eq!(h.signals().last(), Some(&(1, StopSignal::Stop)));
    h.exit(1, ExitClass::Ok);
    h.spawned(1);
    assert_eq!(h.restarts("n", RestartReason::Reload), 1);
    assert_eq!((h.spawn_count(2), h.spawn_count(3)), (1, 1));
}

#[test]
fn a_rotation_restarts_an_auth_blocked_replica_at_once() {
    let mut h = H::started(&[("a", 1)]);
    for _ in 0..3 {
        h.exit(0, ExitClass::Auth);
        let ev = unchanged(&h);
        h.step(ev);
        if h.state(0) == StateKind::AuthBlocked {
            break;
        }
        h.advance(Duration::from_secs(8));
        h.spawned(0);
    }
    assert_eq!(h.state(0), StateKind::AuthBlocked);
    h.step(Event::SourcesChanged);
    let ev = rotated(&h, &[0]);
    h.step(ev);
    assert_eq!(h.state(0), StateKind::Starting);
    assert_eq!(h.restarts("a", RestartReason::Rotation), 1);
}

#[test]
fn a_manual_restart_of_a_worker_goes_one_replica_at_a_time() {
    let mut h = H::started(&[("a", 2)]);
    let r = h.control(ControlRequest::Restart { target: "a".into() });
    assert_eq!(r.message, "restarting a.0, a.1 (one at a time)");
    assert_eq!(h.signals(), [(0, StopSignal::Stop)]);
    h.exit(0, ExitClass::Ok);
    assert_eq!(h.signals().len(), 1, "a.1 waits for a.0 to run again");
    h.spawned(0);
    assert_eq!(h.signals(), [(0, StopSignal::Stop), (1, StopSignal::Stop)]);
}

#[test]
fn a_failed_spawn_moves_the_rolling_restart_on() {
    let mut h = H::started(&[("a", 2)]);
    h.control(ControlRequest::Restart { target: "a".into() });
    h.exit(0, ExitClass::Ok);
    let (slot, run) = h.spawns.remove(0);
    h.step(Event::SpawnFailed {
        slot,
        run,
        reason: "EAGAIN".into(),
    });
    assert_eq!(h.signals().last(), Some(&(1, StopSignal::Stop)));
}

/// Issue 14's reproduction, as events: two replicas on a watched source; the key
/// changes; both exit 77 a second later (the rolling restart has stopped only the
/// first by then, and it takes 2 s to stop).
#[test]
fn one_restart_per_rotation_per_replica_when_an_auth_failure_restarts_first() {
    let mut h = H::started(&[("a", 2)]);
    h.step(Event::SourcesChanged);
    let ev = rotated(&h, &[0, 1]);
    h.step(ev);
    assert_eq!(h.signals(), [(0, StopSignal::Stop)], "one at a time");
    h.now += Duration::from_secs(1);
    // a.0 exits while stopping: it starts again, on the new key.
    h.exit(0, ExitClass::Auth);
    assert_eq!(h.state(0), StateKind::Starting);
    // a.1 exits 77 on the old key: re-read, new key, restarted at once.
    h.exit(1, ExitClass::Auth);
    assert_eq!(h.rereads(), 2);
    let ev = rotated(&h, &[1]);
    h.step(ev);
    assert_eq!(h.state(1), StateKind::Starting);
    h.spawned(1);
    // a.0 is up: the rolling restart moves on, and skips a.1, already restarted.
    h.spawned(0);
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.signals(),
        [(0, StopSignal::Stop)],
        "a.1 stopped a second time"
    );
    assert_eq!((h.spawn_count(0), h.spawn_count(1)), (2, 2));
    assert!(
        h.lines().contains(
            &"a.1: already started again since the rotation restart was planned; not restarting it twice"
                .into()
        ),
        "{:?}",
        h.lines()
    );
    assert_eq!(h.state(1), StateKind::Running);
}

#[test]
fn one_restart_per_rotation_per_replica_when_the_first_is_up_before_the_reread() {
    let mut h = H::started(&[("a", 2)]);
    h.step(Event::SourcesChanged);
    let ev = rotated(&h, &[0, 1]);
    h.step(ev);
    h.now += Duration::from_secs(1);
    h.exit(0, ExitClass::Auth);
    h.exit(1, ExitClass::Auth); // waits for its re-read
    h.spawned(0);
    // The queue reached a.1 while it waits for the re-read: it starts now, once.
    assert_eq!(h.state(1), StateKind::Starting);
    let ev = rotated(&h, &[]);
    h.step(ev);
    h.spawned(1);
    h.advance(Duration::from_secs(10));
    assert_eq!((h.spawn_count(0), h.spawn_count(1)), (2, 2));
    assert_eq!(h.signals(), [(0, StopSignal::Stop)]);
}

/// Issue 14: a revoked key on a quiet queue. Every run outlasts `reset_after`,
/// so a count of consecutive short runs never got past one.
#[test]
fn a_revoked_key_on_a_quiet_queue_reaches_auth_blocked_and_fails_readiness() {
    for (keys, blocked) in [([5, 5, 5], true), ([1, 2, 3], false)] {
        let mut cfg = config(&[("a", 1)]);
        cfg.workers[0].policy.backoff.reset_after = Duration::from_secs(4);
        let mut h = H::with(cfg);
        h.step(Event::Start);
        h.settle();
        for key in keys {
            h.now += Duration::from_secs(7);
            h.exit_key(0, ExitClass::Auth, Some(key));
            let ev = unchanged(&h);
            h.step(ev);
            if h.state(0) == StateKind::AuthBlocked {
                break;
            }
            h.advance(Duration::from_secs(10));
            h.spawned(0);
        }
        let status = h.fleet.status(h.now);
        if blocked {
            assert_eq!(h.state(0), StateKind::AuthBlocked);
            assert_eq!(
                status.readiness().unwrap_err(),
                "a.0 is auth-blocked; a has no running replica"
            );
        } else {
            assert_eq!(h.state(0), StateKind::Running, "each value failed once");
            assert!(status.readiness().is_ok());
        }
    }
}

#[test]
fn a_rolling_restart_waits_for_the_ready_probe_or_its_timeout() {
    let mut cfg = config(&[("a", 3)]);
    cfg.workers[0].ready = Some((Duration::from_secs(5), "http http://x/health".into()));
    let mut h = H::with(cfg);
    h.step(Event::Start);
    h.settle();
    for slot in 0..3 {
        let run = h.run(slot);
        h.step(Event::Ready { slot, run });
    }
    assert!(h.fleet.status(h.now).readiness().is_ok());
    h.control(ControlRequest::Restart { target: "a".into() });
    h.exit(0, ExitClass::Ok);
    h.spawned(0);
    assert_eq!(h.signals().len(), 1, "a.1 waits for a.0's probe");
    assert_eq!(h.fleet.status(h.now).replicas[0].ready, Some(false));
    h.now += Duration::from_millis(1500);
    let run = h.run(0);
    h.step(Event::Ready { slot: 0, run });
    assert!(
        h.lines()
            .contains(&"a.0: ready 1s 500ms after it started (http http://x/health)".into())
    );
    assert_eq!(h.signals().last(), Some(&(1, StopSignal::Stop)));
    // a.1 never passes: the queue moves on at its timeout.
    h.exit(1, ExitClass::Ok);
    h.spawned(1);
    h.advance(Duration::from_millis(4999));
    assert_eq!(h.signals().len(), 2);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.signals().last(), Some(&(2, StopSignal::Stop)));
    assert!(
        h.lines()
            .iter()
            .any(|l| l.starts_with("a.1: not ready 5s after it started"))
    );
}
