//! `stop_target` (issue 14): `leader` sends the stop signal to the worker's main
//! process only, which stops its own children (Celery's prefork pool warm shutdown);
//! `group` (the default) signals every process of the group. And `check` warns when
//! a worker's `stop_timeout` cannot fit in `shutdown_timeout`.

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A leader with one child in its process group. The child reports a SIGTERM it
/// receives itself; the leader, on SIGTERM, asks the child to finish with SIGINT
/// (as Celery's main process tells its pool) and waits for it. In group mode the
/// child's SIGTERM is pending before the leader can send anything, so it is
/// always reported.
const POOL: &str = r#"
import os, signal, subprocess, sys, time
CHILD = r'''
import signal, sys, time
done = False
def term(*_):
    # Reported, not fatal: a SIGTERM that came with the leader's SIGINT (group
    # mode) is still seen, whichever handler Python runs first.
    print("child got SIGTERM directly", flush=True)
def finish(*_):
    global done
    done = True
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGINT, finish)
print("child ready", flush=True)
while not done:
    time.sleep(0.05)
print("child finished its task", flush=True)
'''
def stop(*_):
    print("leader got SIGTERM; stopping the pool", flush=True)
    child.send_signal(signal.SIGINT)
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)  # before the child exists, so before "child ready"
child = subprocess.Popen([sys.executable, "-c", CHILD])
while True:
    time.sleep(1)
"#;

fn pool_sandbox(stop_target: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("pool.py", POOL);
    sb.config(&format!(
        r#"
[supervisor]
shutdown_timeout = "20s"

[[worker]]
name = "pool"
command = ["{py}", "pool.py"]
stop_timeout = "10s"
{stop_target}
"#,
        py = python()
    ));
    sb
}

fn stop_and_collect(sb: &Sandbox) -> String {
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("child ready", WAIT);
    run.signal(15);
    assert_eq!(run.wait_exit(WAIT), Some(0), "{}", run.output());
    run.output()
}

#[test]
fn stop_target_leader_lets_the_main_process_stop_its_own_children() {
    let out = stop_and_collect(&pool_sandbox(r#"stop_target = "leader""#));
    assert!(out.contains("child finished its task"), "{out}");
    assert!(!out.contains("child got SIGTERM directly"), "{out}");
}

#[test]
fn stop_target_group_is_the_default_and_signals_every_process() {
    let out = stop_and_collect(&pool_sandbox(""));
    assert!(out.contains("child got SIGTERM directly"), "{out}");
    assert!(out.contains("child finished its task"), "{out}");
}

#[test]
fn check_warns_when_stop_timeout_cannot_fit_in_shutdown_timeout() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "celery"
command = ["sh", "-c", "exec sleep 60"]
stop_timeout = "30s"
"#,
    );
    let out = sb.run(&["check", "--no-color"]);
    out.assert_code(0)
        .assert_contains("stop_timeout (30s) does not fit in [supervisor] shutdown_timeout (10s)")
        .assert_contains("raise shutdown_timeout to at least 34s");
    sb.config(
        r#"
[supervisor]
shutdown_timeout = "40s"

[[worker]]
name = "celery"
command = ["sh", "-c", "exec sleep 60"]
stop_timeout = "30s"
"#,
    );
    let out = sb.run(&["check", "--no-color"]);
    out.assert_code(0);
    assert!(!out.all().contains("does not fit"), "{}", out.all());
    // A short shutdown_timeout capping the default grace is deliberate: no warning.
    sb.config(
        r#"
[supervisor]
shutdown_timeout = "5s"

[[worker]]
name = "agent"
command = ["sh", "-c", "exec sleep 60"]
"#,
    );
    let out = sb.run(&["check", "--no-color"]);
    out.assert_code(0);
    assert!(!out.all().contains("does not fit"), "{}", out.all());
}
