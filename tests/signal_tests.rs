//! Signals to `agentsup run` (issues 12 and 13): handled from the first
//! instruction, obeyed only from the operator, and a stop during the first load of
//! a hanging `command` source ends the run at once.

use std::time::{Duration, Instant};

use crate::support::*;

/// `hupper` sends SIGHUP to agentsup (its parent) every 20 ms until the file
/// `stop` exists, saying so every 25; the `command` source counts its runs.
fn hupper_config(runs: &std::path::Path) -> String {
    format!(
        r#"
{source}
[[worker]]
name = "hupper"
command = ["sh", "-c", "echo \"hupper up $$\"; n=0; while [ ! -e stop ]; do kill -HUP $PPID; n=$((n+1)); [ $((n % 25)) = 0 ] && echo \"hupper sent $n\"; sleep 0.02; done; echo \"hupper stopped\"; exec sleep 1000"]
keys = ["MY_TOKEN"]
"#,
        source = counting_command_source(runs)
    )
}

#[test]
fn a_workers_sighup_is_ignored_and_the_operators_reloads() {
    let sb = Sandbox::new();
    let runs = sb.path().join("runs.txt");
    sb.config(&hupper_config(&runs));
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for_all(&["hupper up", "ignored SIGHUP from pid"], PATIENCE);
    let out = run.output();
    let warning = out
        .lines()
        .find(|l| l.contains("ignored SIGHUP from pid"))
        .unwrap();
    assert!(
        warning.contains("worker hupper.0") && warning.contains("not commands"),
        "{warning}"
    );
    // Let it send a hundred, then stop it.
    run.wait_for("hupper sent 100", PATIENCE);
    sb.write("stop", "");
    run.wait_for("hupper stopped", PATIENCE);
    assert!(alive(run.pid()), "agentsup died:\n{}", run.output());
    assert_eq!(
        count_runs(&runs),
        1,
        "a worker's SIGHUP ran the source command"
    );
    let out = run.output();
    assert_eq!(out.matches("ignored SIGHUP").count(), 1, "{out}");
    assert!(!out.contains("received SIGHUP"), "{out}");

    // The test process is not below agentsup: its SIGHUP is the operator's.
    run.signal(1);
    run.wait_for("received SIGHUP: re-reading", PATIENCE);
    run.wait_for("re-read sources: values pass the checks", PATIENCE);
    assert_eq!(count_runs(&runs), 2);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// A worker's SIGTERM does not stop agentsup either.
#[test]
fn a_workers_sigterm_does_not_stop_agentsup() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "killer"
command = ["sh", "-c", "kill -TERM $PPID; kill -INT $PPID; kill -QUIT $PPID; echo killer done; exec sleep 1000"]
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for_all(&["killer done", "ignored SIG"], PATIENCE);
    // The operator's ping still works (a stopped agentsup would not answer).
    assert!(
        wait_until(PATIENCE, || sb.run(&["status"]).code == Some(0)),
        "{}",
        run.output()
    );
    let out = run.output();
    assert!(!out.contains("stopping every worker"), "{out}");
    assert_eq!(
        out.matches("ignored SIG").count(),
        1,
        "one warning per worker:\n{out}"
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// A config of `n` workers (big enough that parsing and checking it takes a while)
/// whose program does not exist: `run` exits 78 at preflight, having started
/// nothing.
fn many_workers(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "[[worker]]\nname = \"w{i}\"\ncommand = [\"no-such-program-{i}\"]\n\n"
        ));
    }
    s
}

#[test]
fn sighup_right_after_exec_with_2000_workers_does_not_kill_agentsup() {
    let sb = Sandbox::new();
    sb.config(&many_workers(2000));
    let mut run = sb.spawn(&["run", "--no-color"]);
    let pid = run.pid();
    // From 50 ms after exec, a SIGHUP every 5 ms until it exits: before the fix,
    // the first one killed it while it parsed the config.
    std::thread::sleep(Duration::from_millis(50));
    let mut sent = 0;
    let code = loop {
        if let Ok(Some(st)) = run.child.as_mut().unwrap().try_wait() {
            use std::os::unix::process::ExitStatusExt;
            break st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        }
        signal(pid, 1);
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
        assert!(sent < 20_000, "agentsup did not exit:\n{}", run.output());
    };
    assert!(run.drain(PATIENCE));
    assert_eq!(
        code,
        78,
        "after {sent} SIGHUPs (expected: killed by none, exit 78 at preflight):\n{}",
        run.output()
    );
    assert!(sent >= 2, "agentsup exited before the SIGHUPs began");
    assert!(
        run.output().contains("no-such-program-0"),
        "{}",
        run.output()
    );
}

#[test]
fn sigterm_during_a_hanging_first_load_kills_the_source_and_exits_0() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[supervisor]
shutdown_timeout = "5s"

[[source]]
type = "command"
command = ["sh", "-c", "sleep 1000 & echo $! > child.pid; echo $$ > source.pid; wait"]
timeout = "120s"

[[worker]]
name = "w"
command = ["sh", "-c", "echo w is up; exec sleep 1000"]
keys = ["MY_TOKEN"]
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    let read_pid = |f: &str| -> Option<i32> {
        std::fs::read_to_string(sb.path().join(f))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    assert!(
        wait_until(PATIENCE, || read_pid("source.pid").is_some()
            && read_pid("child.pid").is_some()),
        "the source command did not start:\n{}",
        run.output()
    );
    let (source, child) = (
        read_pid("source.pid").unwrap(),
        read_pid("child.pid").unwrap(),
    );
    let t = Instant::now();
    run.signal(15);
    let code = run.wait_exit(PATIENCE);
    let took = t.elapsed();
    assert_eq!(
        code,
        Some(0),
        "exit {code:?} after {took:?}:\n{}",
        run.output()
    );
    assert!(
        took < Duration::from_secs(5 + 2),
        "took {took:?} (shutdown_timeout 5s):\n{}",
        run.output()
    );
    assert_all_die(
        &[source, child],
        "source command process",
        "agentsup's stop",
    );
    let out = run.output();
    assert!(
        out.contains("received SIGTERM while loading the sources"),
        "{out}"
    );
    assert!(!out.contains("w is up"), "{out}");
    eprintln!("SIGTERM during a hanging first load: exit 0 after {took:?}");
}
