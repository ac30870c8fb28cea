//! Who may drive a running supervisor (issue 12): not its own workers, over the
//! control socket or with signals; and reloads, whatever asks for them, are paced
//! so that nothing can make agentsup hammer a secret store.

use crate::control_tests::{Ctl, pid, pids_of};
use crate::support::*;

/// `other` runs; `attacker` waits for the file `go`, then drives the supervisor
/// with the real binary (its path, the config and the runtime dir are in its
/// `vars`) and reports each exit status.
fn attacker_config(ctl_runtime: &std::path::Path, dir: &std::path::Path) -> String {
    format!(
        r#"
[[worker]]
name = "other"
command = ["sh", "-c", "echo \"other up $$\"; exec sleep 1000"]

[[worker]]
name = "attacker"
command = ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; \"$BIN\" restart other; echo \"attacker: restart exit $?\"; \"$BIN\" status; echo \"attacker: status exit $?\"; exec sleep 1000"]
vars = {{ BIN = "{bin}", XDG_RUNTIME_DIR = "{rt}", AGENTSUP_CONFIG = "{cfg}" }}
"#,
        bin = bin().display(),
        rt = ctl_runtime.display(),
        cfg = dir.join("supervisor.toml").display(),
    )
}

#[test]
fn a_worker_cannot_restart_another_but_the_operator_can() {
    let ctl = Ctl::new("");
    ctl.sb.config(&attacker_config(&ctl.runtime, ctl.sb.path()));
    let mut run = ctl.start();
    let before = ctl.running_pids(2);
    let other = pid(&before, "other.0");

    ctl.sb.write("go", "");
    let refused = run.wait_for("attacker: restart exit", PATIENCE);
    assert!(refused.ends_with("exit 1"), "{refused}");
    run.wait_for("attacker: status exit 1", PATIENCE);
    let out = run.output();
    assert!(
        out.contains("refused: this client")
            && out.contains("runs under agentsup (worker attacker.0")
            && out.contains("workers may not drive the supervisor"),
        "the worker's client did not say why:\n{out}"
    );
    // agentsup logged it once, naming the worker.
    assert_eq!(
        out.matches("control socket: refused a client").count(),
        1,
        "{out}"
    );
    // `other` was not restarted: same pid, no restart counted.
    let s = ctl.status();
    assert_eq!(pid(&pids_of(&s), "other.0"), other, "{s:#}");
    assert_eq!(s["replicas"][0]["restarts"], 0, "{s:#}");
    assert!(alive(other));

    // The operator's restart (this test process is not below agentsup) works.
    ctl.run(&["restart", "other"])
        .assert_code(0)
        .assert_contains("other.0");
    assert!(
        wait_until(PATIENCE, || {
            let p = pid(&pids_of(&ctl.status()), "other.0");
            p != 0 && p != other
        }),
        "the operator's restart did not happen:\n{}",
        run.output()
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// A vault-style `command` source that appends a line to `runs.txt` each time it
/// runs, and one worker that uses its value.
fn counted_source_config(runs: &std::path::Path) -> String {
    format!(
        r#"
[[source]]
type = "command"
command = ["sh", "-c", "echo run >> '{runs}'; echo MY_TOKEN=abcdefgh123"]

[[worker]]
name = "w"
command = ["sh", "-c", "echo \"w up $$\"; exec sleep 1000"]
keys = ["MY_TOKEN"]
"#,
        runs = runs.display()
    )
}

fn count_runs(runs: &std::path::Path) -> usize {
    std::fs::read_to_string(runs)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_storm_of_reloads_runs_the_secret_command_a_bounded_number_of_times() {
    let ctl = Ctl::new("");
    let runs = ctl.sb.path().join("runs.txt");
    ctl.sb.config(&counted_source_config(&runs));
    let mut run = ctl.start();
    ctl.running_pids(1);
    assert_eq!(count_runs(&runs), 1, "the first load runs it once");
    let started = std::time::Instant::now();

    // 50 operators' `agentsup reload` at once: every one gets its answer, and they
    // share one or two re-reads.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let c = ctl.cmd(&["reload"]);
            std::thread::spawn(move || {
                let sb = Sandbox::new();
                sb.run_cmd(c)
            })
        })
        .collect();
    for c in clients {
        let out = c.join().unwrap();
        out.assert_code(0)
            .assert_contains("sources re-read and checked");
    }
    // At most one start per 3 s, plus the one at the start of the window.
    let bound = |elapsed: f64| 1 + (elapsed / 3.0).ceil() as usize;
    let (burst, elapsed) = (count_runs(&runs) - 1, started.elapsed().as_secs_f64());
    assert!(
        burst >= 1 && burst <= bound(elapsed),
        "50 concurrent reloads in {elapsed:.1} s ran the command {burst} times"
    );

    // A tight loop of 50 more, each on its own connection, not waiting for the
    // answer; then one that waits, which is answered once the queue is done.
    let sock = ctl.socket();
    for _ in 0..50 {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"{\"cmd\":\"reload\"}\n").unwrap();
    }
    ctl.run(&["reload"]).assert_code(0);
    let total = count_runs(&runs) - 1;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        total <= bound(elapsed),
        "101 reloads in {elapsed:.1} s ran the command {total} times"
    );
    eprintln!("101 reloads in {elapsed:.1} s: the command ran {total} times");
    let out = run.output();
    assert!(out.contains("re-read paced"), "{out}");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}
