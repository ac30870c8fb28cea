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
