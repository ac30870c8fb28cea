//! The one validation pipeline (`src/validate.rs`): `check`, `run`, `exec` and
//! re-reads see the same findings, in the same order of steps (load, register with
//! the redactor, checks, preflight, probe).

use crate::support::*;

/// A worker whose program is misspelled, with every key it declares present (a
/// fresh canary, returned).
fn typo_sandbox() -> (Sandbox, Canary) {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write(".env", key.dotenv("OPENAI_API_KEY"));
    sb.write("agent.py", "open('started', 'w').close()\n");
    sb.config(
        r#"
[[worker]]
name = "planner"
command = ["pyhton3", "agent.py"]
keys = ["OPENAI_API_KEY"]
"#,
    );
    (sb, key)
}

#[test]
fn check_reports_a_command_not_on_the_workers_path() {
    let (sb, key) = typo_sandbox();
    let out = sb.run(&["check"]);
    out.assert_code(78)
        .assert_contains("planner")
        .assert_contains("pyhton3")
        .assert_no_leak(&key);
    let json = sb.run(&["check", "--format", "json"]);
    json.assert_code(78);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let f = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "command")
        .unwrap_or_else(|| panic!("no `command` finding: {doc:#}"));
    assert_eq!(f["workers"], serde_json::json!(["planner"]));
    assert_eq!(f["severity"], "error");
    assert_eq!(doc["ok"], false);
}

#[test]
fn run_never_prints_ok_for_a_config_it_refuses() {
    let (sb, key) = typo_sandbox();
    let out = sb.run(&["run"]);
    out.assert_code(78)
        .assert_contains("planner")
        .assert_contains("pyhton3")
        .assert_contains("nothing was started")
        .assert_no_leak(&key);
    for line in out.all().lines() {
        assert!(
            !line.trim_start().starts_with("ok") && !line.contains("every required key"),
            "`run` printed an ok line before refusing:\n{}",
            out.all()
        );
    }
    // The report `run` prints is the one `check` prints.
    let check = sb.run(&["check"]);
    assert_eq!(out.stdout, check.stdout, "run and check disagree");
    assert!(!sb.path().join("started").exists(), "a worker was started");
}

#[test]
fn run_json_embeds_the_report_as_a_document() {
    let (sb, key) = typo_sandbox();
    let out = sb.run(&["run", "--log-format", "json"]);
    out.assert_code(78).assert_no_leak(&key);
    let event: serde_json::Value = out
        .stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON event on stdout:\n{}", out.stdout));
    assert_eq!(event["event"], "check");
    assert_eq!(event["level"], "error");
    assert_eq!(event["report"]["ok"], false);
    assert_eq!(event["report"]["errors"], 1);
    assert_eq!(event["report"]["findings"][0]["code"], "command");
}

#[test]
fn a_startable_config_still_runs_after_the_same_report() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write(".env", key.dotenv("OPENAI_API_KEY"));
    sb.config(
        r#"
[[worker]]
name = "planner"
command = ["sh", "-c", "echo started-once"]
keys = ["OPENAI_API_KEY"]
restart = "never"
"#,
    );
    let out = sb.run(&["run"]);
    out.assert_code(0)
        .assert_contains("ok: every required key is present")
        .assert_contains("started-once")
        .assert_no_leak(&key);
}

#[test]
fn config_type_errors_name_the_field_never_the_value() {
    let key = Canary::new("sk-proj-");
    // A TOML literal string: the canary's `"` and `\` need no escape.
    let v = key.toml();
    let cases = [
        (
            format!("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nreplicas = {v}\n"),
            "supervisor.toml:4:12",
            "`replicas` in `[[worker]]`: expected an integer, found a string",
        ),
        (
            format!("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nrestart = {v}\n"),
            "supervisor.toml:4:11",
            "`restart` in `[[worker]]`: unknown value (not shown), expected one of",
        ),
        (
            format!("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nvars = {{ A = [{v}] }}\n"),
            "supervisor.toml:4:",
            "`A` in `[[worker]]`: expected a string, found an array",
        ),
        (
            format!("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = {v}\n"),
            "supervisor.toml:4:16",
            "`stop_timeout` in `[[worker]]`: invalid duration (the value is not shown)",
        ),
        (
            format!("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nstop_signal = {v}\n"),
            "supervisor.toml:4:15",
            "`stop_signal` in `[[worker]]`: unknown signal (the value is not shown)",
        ),
        (
            format!("[supervisor]\nprobe = {v}\n"),
            "supervisor.toml:2:9",
            "`probe` in `[supervisor]`: expected a boolean, found a string",
        ),
    ];
    for (toml, located, words) in &cases {
        let sb = Sandbox::new();
        sb.config(toml);
        for args in [&["check"][..], &["run"][..], &["env", "a"][..]] {
            let out = sb.run(args);
            out.assert_code(78)
                .assert_contains(located)
                .assert_contains(words);
            out.assert_no_leak(&key);
        }
    }
}

#[test]
fn misspelt_fields_and_options_get_the_nearest_valid_name() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"a\"\ncomand = [\"x\"]\n");
    let out = sb.run(&["check"]);
    out.assert_code(78)
        .assert_contains("supervisor.toml:3:1: unknown field `comand`; did you mean `command`?");
    assert!(!out.stderr.contains("expected one of"), "{}", out.stderr);

    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nrestart = \"on_failure\"\n");
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("did you mean `on-failure`?");

    // Nothing close: the valid names are listed instead.
    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nxyzzy = 1\n");
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("unknown field `xyzzy`, expected one of");
}

#[test]
fn a_misspelt_worker_on_the_command_line_gets_the_nearest_name() {
    let (sb, _key) = typo_sandbox();
    for args in [
        &["env", "plannr"][..],
        &["run", "--only", "plannr"][..],
        &["exec", "--worker", "plannr", "--", "true"][..],
    ] {
        sb.run(args)
            .assert_code(2)
            .assert_contains("unknown worker \"plannr\"")
            .assert_contains("did you mean \"planner\"?");
    }
}
