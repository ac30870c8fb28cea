//! Unit tests of `replica` (kept apart: the module itself stays readable).

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
    assert!(!State::AuthBlocked { until: t }.kind().is_running());
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
    assert!(reason.contains("Missing credentials") && reason.contains("restarting cannot help"));
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
        assert_eq!(state.kind().is_running(), ready, "{name}");
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
