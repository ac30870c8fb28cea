//! `agentsup exec`: a tini-like single child with the built environment.

use crate::support::*;

/// A sandbox whose `dir` source holds a fresh OPENAI_API_KEY canary (returned).
fn exec_sandbox() -> (Sandbox, Canary) {
    let sb = Sandbox::new();
    let key = Canary::new("sk-");
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", key.value()));
    sb.config(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "planner"
command = ["true"]
keys = ["OPENAI_API_KEY"]
vars = { MODEL = "m" }
"#,
    );
    (sb, key)
}

#[test]
fn exec_returns_the_child_status() {
    let (sb, _key) = exec_sandbox();
    sb.run(&[
        "exec",
        "--keys",
        "OPENAI_API_KEY",
        "--",
        "sh",
        "-c",
        "exit 7",
    ])
    .assert_code(7);
    sb.run(&["exec", "--worker", "planner", "--", "sh", "-c", "exit 0"])
        .assert_code(0);
}

#[test]
fn exec_returns_128_plus_the_signal() {
    let (sb, _key) = exec_sandbox();
    sb.run(&[
        "exec",
        "--keys",
        "OPENAI_API_KEY",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ])
    .assert_code(143);
    sb.run(&[
        "exec",
        "--keys",
        "OPENAI_API_KEY",
        "--",
        "sh",
        "-c",
        "kill -KILL $$",
    ])
    .assert_code(137);
}

#[test]
fn exec_builds_the_worker_environment() {
    let (sb, key) = exec_sandbox();
    let out = sb.run_env(
        &[
            "exec",
            "--no-masking",
            "--worker",
            "planner",
            "--",
            "sh",
            "-c",
            "env | sort",
        ],
        &[("UNDECLARED", "nope")],
    );
    out.assert_code(0)
        .assert_contains("MODEL=m")
        .assert_contains("AGENTSUP_WORKER=planner")
        .assert_contains(&format!("OPENAI_API_KEY={}", key.value()));
    assert!(!out.stdout.contains("UNDECLARED"), "{}", out.stdout);
}

#[test]
fn exec_forwards_signals_to_the_child() {
    let (sb, _key) = exec_sandbox();
    let mut c = sb.cmd(&[
        "exec",
        "--keys",
        "OPENAI_API_KEY",
        "--",
        "sh",
        "-c",
        "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    c.stdin(std::process::Stdio::null());
    let mut run = sb.spawn_cmd(c);
    run.wait_for("ready", PATIENCE);
    run.signal(15);
    run.wait_for("got-term", PATIENCE);
    assert_eq!(run.wait_exit(PATIENCE), Some(42));
}

#[test]
fn exec_refuses_a_missing_key() {
    let (sb, _key) = exec_sandbox();
    sb.run(&[
        "exec",
        "--keys",
        "ANTHROPIC_API_KEY",
        "--",
        "sh",
        "-c",
        "touch ran",
    ])
    .assert_code(78)
    .assert_contains("ANTHROPIC_API_KEY");
    assert!(!sb.path().join("ran").exists());
}

#[test]
fn exec_of_an_unknown_program_exits_127_naming_it() {
    let (sb, _key) = exec_sandbox();
    let out = sb.run(&[
        "exec",
        "--keys",
        "OPENAI_API_KEY",
        "--",
        "no-such-program-xyz",
    ]);
    // As a shell and `env` do: 127 for a command not found.
    out.assert_code(127).assert_contains("no-such-program-xyz");
}

/// `exec` started as `nohup` starts it: SIGHUP ignored, then exec'd.
fn nohup_cmd(sb: &Sandbox, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(python());
    c.args([
        "-c",
        "import os, signal, sys\n\
         signal.signal(signal.SIGHUP, signal.SIG_IGN)\n\
         os.execv(sys.argv[1], sys.argv[1:])",
    ])
    .arg(bin())
    .args(args)
    .current_dir(sb.path())
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("HOME", sb.path())
    .stdin(std::process::Stdio::null());
    c
}

/// The `SigIgn` mask of `pid`, from `/proc`.
fn ignored_mask(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn under_nohup_the_child_keeps_ignoring_sighup() {
    let (sb, _key) = exec_sandbox();
    let mut run = sb.spawn_cmd(nohup_cmd(
        &sb,
        &[
            "exec",
            "--keys",
            "OPENAI_API_KEY",
            "--",
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 5' USR1; echo ready $$; while :; do sleep 0.1; done",
        ],
    ));
    let line = run.wait_for("ready ", PATIENCE);
    let child: i32 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert_ne!(
        ignored_mask(child) & (1 << (libc::SIGHUP - 1)),
        0,
        "the command did not inherit SIGHUP ignored"
    );
    // SIGHUP first, then SIGUSR1: agentsup forwards them in that order (one
    // thread; HUP is the lower number when both are pending), and the shell gets
    // HUP first too. Had the shell not ignored HUP, it would die of it (129)
    // before its USR1 trap could run.
    run.signal(libc::SIGHUP);
    run.signal(libc::SIGUSR1);
    run.wait_for("got-usr1", PATIENCE);
    assert_eq!(run.wait_exit(PATIENCE), Some(5));
}

#[test]
fn fault_signals_sent_from_outside_are_forwarded_not_fatal() {
    let (sb, _key) = exec_sandbox();
    let names = ["SEGV", "ILL", "FPE", "BUS", "ABRT", "TRAP", "SYS"];
    let traps: String = names
        .iter()
        .map(|n| format!("trap 'echo got-{n}' {n}; "))
        .collect();
    let script = format!("{traps}trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done");
    let mut run = sb.spawn(&[
        "exec",
        "--keys",
        "OPENAI_API_KEY",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    run.wait_for("ready", PATIENCE);
    // kill(2) from outside, as `kill -SEGV <agentsup>` does: si_code SI_USER.
    let sigs = [
        libc::SIGSEGV,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGBUS,
        libc::SIGABRT,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];
    for (name, sig) in names.iter().zip(sigs) {
        run.signal(sig);
        run.wait_for(&format!("got-{name}"), PATIENCE);
    }
    run.signal(libc::SIGTERM);
    // The child's status, not agentsup's death by a signal (128+N).
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}
