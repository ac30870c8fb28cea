//! Unit tests of [`Fleet`] (harness in `harness.rs`): replicas' life cycle,
//! give-up, shutdown, signals and control requests. Re-reads, rotations and
//! rolling restarts are in `tests_fleet.rs`.

use std::time::Duration;

use super::harness::{H, config};
use super::*;
use crate::replica::RestartPolicy;
use crate::replica::StopSignal;
use crate::signals::SignalEvent;
use crate::status::ControlRequest;

#[test]
fn start_spawns_every_replica_once_in_config_order() {
    let mut h = H::new(&[("a", 2), ("b", 1)]);
    let out = h.step(Event::Start);
    let spawns: Vec<(SlotId, u64)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, run } => Some((*slot, *run)),
            _ => None,
        })
        .collect();
    assert_eq!(spawns, [(0, 1), (1, 1), (2, 1)]);
    assert_eq!(h.fleet.slot(2), (1, 0));
    h.settle();
    let status = h.fleet.status(h.now);
    assert!(status.readiness().is_ok(), "{status:?}");
    assert_eq!(status.replicas[1].pid, Some(102));
    assert!(
        status
            .replicas
            .iter()
            .all(|r| r.state == StateKind::Running)
    );
}

#[test]
fn reports_of_an_older_run_are_ignored() {
    let mut h = H::started(&[("a", 1)]);
    h.exit(0, ExitClass::Crash);
    h.advance(Duration::from_secs(1));
    h.spawned(0);
    assert_eq!(h.run(0), 2);
    let late = h.step(Event::Exited {
        slot: 0,
        run: 1,
        status: Termination::Exited(1),
        class: ExitClass::Crash,
        reason: "late".into(),
        leaked: false,
        key: None,
    });
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(h.state(0), StateKind::Running);
    assert!(!h.fleet.is_current(0, 1) && h.fleet.is_current(0, 2));
}

#[test]
fn a_stale_replica_timer_is_ignored() {
    let mut h = H::started(&[("a", 1)]);
    h.exit(0, ExitClass::Crash);
    // The backoff timer of generation 1 is armed; a restart request makes it stale.
    let stale = h.timers[0].1.clone();
    h.control(ControlRequest::Restart { target: "a".into() });
    assert_eq!(h.state(0), StateKind::Starting);
    h.timers.clear();
    assert!(h.step(Event::Timer(stale)).is_empty());
}

#[test]
fn crash_backoff_restarts_count_as_crash_and_give_up_after_max_restarts() {
    let mut h = H::started(&[("a", 1)]);
    for n in 1..=2u64 {
        h.exit(0, ExitClass::Crash);
        assert_eq!(h.state(0), StateKind::Backoff);
        // 1 s, then 2 s (jitter 0): nothing before the deadline.
        let delay = Duration::from_secs(1 << (n - 1));
        h.advance(delay - Duration::from_millis(1));
        assert_eq!(h.state(0), StateKind::Backoff);
        h.advance(Duration::from_millis(1));
        assert_eq!(h.state(0), StateKind::Starting);
        h.spawned(0);
        assert_eq!(h.restarts("a", RestartReason::Crash), n);
    }
    h.exit(0, ExitClass::Crash);
    assert_eq!(h.state(0), StateKind::Failed);
    assert!(
        h.lines()
            .iter()
            .any(|l| l.contains("on_give_up = \"keep\""))
    );
    let status = h.fleet.status(h.now);
    assert_eq!(status.replicas[0].restarts, 2);
    assert_eq!(status.replicas[0].last_exit.as_deref(), Some("crash"));
    assert_eq!(
        status.readiness().unwrap_err(),
        "a.0 is failed; a has no running replica"
    );
}

#[test]
fn a_failed_spawn_is_logged_and_backs_off_as_a_crash() {
    let mut h = H::new(&[("a", 1)]);
    h.step(Event::Start);
    let (slot, run) = h.spawns.remove(0);
    h.step(Event::SpawnFailed {
        slot,
        run,
        reason: "No such file or directory".into(),
    });
    assert_eq!(h.state(0), StateKind::Backoff);
    assert!(
        h.lines()
            .iter()
            .any(|l| l == "a.0 could not start: worker \"a\": No such file or directory"),
        "{:?}",
        h.lines()
    );
    h.advance(Duration::from_secs(1));
    h.spawned(0);
    assert_eq!(h.restarts("a", RestartReason::Crash), 1);
}

#[test]
fn on_give_up_exit_stops_every_other_worker_and_exits_1() {
    let mut cfg = config(&[("a", 1), ("b", 2)]);
    cfg.on_give_up = OnGiveUp::Exit;
    cfg.workers[0].policy.max_restarts = 1;
    let mut h = H::with(cfg);
    h.step(Event::Start);
    h.settle();
    h.exit(0, ExitClass::Crash);
    assert_eq!(h.state(0), StateKind::Failed);
    assert_eq!(
        h.signals(),
        [(1, StopSignal::Stop), (2, StopSignal::Stop)],
        "the other workers are stopped"
    );
    assert!(h.fleet.status(h.now).shutting_down);
    h.exit(1, ExitClass::Ok);
    assert!(!h.fleet.all_done());
    h.exit(2, ExitClass::Crash);
    assert!(h.fleet.all_done());
    assert_eq!(
        h.fleet.outcome(),
        (
            code::FAILURE,
            "all workers stopped; some had failed for good (exit status 1)"
        )
    );
}

#[test]
fn on_give_up_keep_leaves_the_others_running_and_a_revived_replica_exits_0() {
    let mut cfg = config(&[("a", 1), ("b", 1)]);
    cfg.workers[0].policy.restart = RestartPolicy::Never;
    let mut h = H::with(cfg);
    h.step(Event::Start);
    h.settle();
    h.exit(0, ExitClass::Crash);
    assert_eq!(h.state(0), StateKind::Failed);
    assert!(h.signals().is_empty());
    assert_eq!(h.state(1), StateKind::Running);
    assert_eq!(h.fleet.outcome().0, code::FAILURE, "still failed");
    let r = h.control(ControlRequest::Restart { target: "a".into() });
    assert!(r.ok, "{r:?}");
    h.spawned(0);
    assert_eq!(h.restarts("a", RestartReason::Manual), 1);
    h.step(Event::Signal(SignalEvent::Shutdown(libc::SIGTERM)));
    h.exit(0, ExitClass::Ok);
    h.exit(1, ExitClass::Ok);
    assert!(h.fleet.all_done());
    assert_eq!(h.fleet.outcome(), (code::OK, "all workers stopped"));
}

#[test]
fn shutdown_stops_everything_kills_at_90_percent_and_stops_waiting_on_stdout_at_100() {
    let mut h = H::started(&[("a", 2)]);
    let out = h.step(Event::Signal(SignalEvent::Shutdown(libc::SIGTERM)));
    assert!(out.contains(&Action::BeginShutdown {
        output_deadline: h.now + Duration::from_secs(10)
    }));
    assert!(out.contains(&Action::ArmTimer {
        at: h.now + Duration::from_secs(9),
        timer: Timer::ShutdownDeadline
    }));
    assert_eq!(h.signals(), [(0, StopSignal::Stop), (1, StopSignal::Stop)]);
    h.exit(0, ExitClass::Ok);
    assert_eq!(
        h.transitions(0),
        [
            "stopped->starting",
            "starting->running",
            "running->stopping",
            "stopping->stopped"
        ]
    );
    assert_eq!(h.pid(0), None);
    assert_eq!(h.pid(1), Some(102));
    // Replica 1 ignores its stop signal; its own SIGKILL comes at stop_timeout (2 s).
    h.advance(Duration::from_secs(2));
    assert_eq!(h.signals().last(), Some(&(1, StopSignal::Kill)));
    h.advance(Duration::from_secs(7));
    assert!(h.all.contains(&Action::Sweep));
    assert!(
        h.lines()
            .iter()
            .any(|l| l.starts_with("shutdown_timeout (10s) nearly reached"))
    );
    assert!(!h.fleet.all_done(), "replica 1 has not been reaped");
    h.exit(1, ExitClass::Crash);
    assert!(h.fleet.all_done());
}

#[test]
fn a_second_stop_signal_kills_at_once() {
    let mut h = H::started(&[("a", 2)]);
    h.step(Event::Signal(SignalEvent::Shutdown(libc::SIGTERM)));
    let out = h.step(Event::Signal(SignalEvent::Shutdown(libc::SIGINT)));
    let kills: Vec<_> = out
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Signal {
                    sig: StopSignal::Kill,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(kills.len(), 2, "{out:?}");
    assert!(
        h.lines()
            .iter()
            .any(|l| l == "received SIGINT (a second stop signal): killing every worker now")
    );
}

#[test]
fn nothing_starts_once_shutting_down() {
    let mut h = H::started(&[("a", 2)]);
    h.exit(0, ExitClass::Crash); // in backoff
    h.control(ControlRequest::Restart {
        target: "a.1".into(),
    });
    assert_eq!(h.state(1), StateKind::Stopping);
    h.step(Event::Signal(SignalEvent::Shutdown(libc::SIGTERM)));
    assert_eq!(
        h.state(0),
        StateKind::Stopped,
        "a waiting replica just stops"
    );
    h.advance(Duration::from_secs(5));
    h.exit(1, ExitClass::Ok);
    assert_eq!(
        h.state(1),
        StateKind::Stopped,
        "the stop wins over the restart"
    );
    assert!(h.spawns.is_empty());
    assert!(h.fleet.all_done());
    let r = h.control(ControlRequest::Restart { target: "a".into() });
    assert_eq!(
        (r.ok, r.message.as_str()),
        (false, "agentsup is shutting down")
    );
}

#[test]
fn a_stop_signal_reaching_a_starting_replica_is_applied_once_it_runs() {
    let mut h = H::new(&[("a", 1)]);
    h.step(Event::Start);
    h.step(Event::Signal(SignalEvent::Shutdown(libc::SIGTERM)));
    assert!(h.signals().is_empty(), "no process to signal yet");
    h.spawned(0);
    assert_eq!(h.signals(), [(0, StopSignal::Stop)]);
    assert_eq!(h.state(0), StateKind::Stopping);
}

#[test]
fn a_restart_request_reaching_a_starting_replica_is_remembered() {
    let mut h = H::new(&[("a", 1)]);
    h.step(Event::Start);
    // A reload found new values while replica 0 was still starting on the old ones.
    let r = h.control(ControlRequest::Restart {
        target: "a.0".into(),
    });
    assert!(r.ok);
    assert!(h.signals().is_empty());
    h.spawned(0);
    assert_eq!(h.signals(), [(0, StopSignal::Stop)]);
    h.exit(0, ExitClass::Ok);
    assert_eq!(h.state(0), StateKind::Starting);
    assert_eq!(h.spawn_count(0), 2);
    h.spawned(0);
    assert_eq!(h.restarts("a", RestartReason::Manual), 1);
}

#[test]
fn control_restart_unknown_names_the_workers_and_the_nearest() {
    let mut h = H::started(&[("planner", 1), ("coder", 1)]);
    let r = h.control(ControlRequest::Restart {
        target: "planer".into(),
    });
    assert!(!r.ok);
    assert_eq!(
        r.message,
        "no replica \"planer\"; workers: planner, coder (use NAME or NAME.N); did you mean \"planner\"?"
    );
    let r = h.control(ControlRequest::Restart {
        target: "planner.3".into(),
    });
    assert!(
        !r.ok && r.message.starts_with("no replica \"planner.3\""),
        "{r:?}"
    );
    assert!(h.signals().is_empty());
}

#[test]
fn control_restart_of_one_replica_touches_only_it() {
    let mut h = H::started(&[("a", 3)]);
    let r = h.control(ControlRequest::Restart {
        target: "a.1".into(),
    });
    assert_eq!(r.message, "restarting a.1 (one at a time)");
    assert_eq!(h.signals(), [(1, StopSignal::Stop)]);
}

#[test]
fn control_status_is_answered_with_a_snapshot() {
    let mut h = H::started(&[("a", 1)]);
    h.now += Duration::from_secs(5);
    let r = h.control(ControlRequest::Status);
    let s = r.status.expect("a status");
    assert!(r.ok);
    assert_eq!(s.config, "/srv/supervisor.toml");
    assert_eq!(s.replicas[0].uptime_secs, Some(5.0));
    assert_eq!(s.uptime_secs, 5.0);
}

#[test]
fn ignored_signals_are_warned_once_per_sender_and_wait_for_their_worker() {
    let mut h = H::new(&[("a", 1)]);
    h.step(Event::Start);
    // The worker signals before its Spawned report: the warning waits for it.
    let pid = 101;
    let ignored = |sender| {
        Event::Signal(SignalEvent::Ignored {
            sig: libc::SIGTERM,
            sender,
            below: pid,
        })
    };
    h.step(ignored(pid));
    h.step(ignored(pid + 50));
    assert!(h.lines().is_empty());
    assert_eq!(h.spawned(0), pid);
    let lines = h.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("ignored SIGTERM from pid 101 (worker a.0, pid 101)"),
        "{lines:?}"
    );
    // A sender that never becomes a worker is named after its wait.
    h.step(Event::Signal(SignalEvent::Ignored {
        sig: libc::SIGHUP,
        sender: 7,
        below: 7,
    }));
    h.advance(Duration::from_secs(1));
    assert!(
        h.lines()[1].starts_with("ignored SIGHUP from pid 7 (a process agentsup started, pid 7)"),
        "{:?}",
        h.lines()
    );
}

#[test]
fn a_leaked_output_is_warned_about() {
    let mut h = H::started(&[("a", 1)]);
    h.step(Event::Exited {
        slot: 0,
        run: 1,
        status: Termination::Exited(0),
        class: ExitClass::Ok,
        reason: "exited".into(),
        leaked: true,
        key: None,
    });
    assert!(h.lines()[0].starts_with("a.0: processes it started outside its process group"));
    assert_eq!(h.state(0), StateKind::Exited);
    assert!(h.fleet.all_done());
    assert_eq!(h.fleet.outcome(), (code::OK, "every worker has finished"));
}
