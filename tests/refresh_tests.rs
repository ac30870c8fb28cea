//! `refresh` and `ttl_pointer` on `command` sources (issue 14), with the real
//! binary: the command runs again on its timer, a changed value rolls out like a
//! watched file's change, a failing refresh keeps the old values, backs off, is
//! reported redacted and counted in `/metrics`.

use crate::support::*;

/// A `command` source printing `MY_TOKEN=<content of value>`, counting its runs in
/// `runs`, failing (and echoing the value to stderr, as a broken tool might) while
/// `fail` exists.
fn source(sb: &Sandbox, extra: &str) -> String {
    sb.script(
        "helper.sh",
        "echo run >> runs\nif [ -e fail ]; then echo \"vault: error talking to server; token $(cat value)\" >&2; exit 2; fi\necho \"MY_TOKEN=$(cat value)\"\n",
    );
    format!("[[source]]\ntype = \"command\"\ncommand = [\"sh\", \"helper.sh\"]\n{extra}\n")
}

const WORKER: &str = r#"
[[worker]]
name = "w"
command = ["sh", "-c", "echo \"token length ${#MY_TOKEN}\"; exec sleep 300"]
keys = ["MY_TOKEN"]
"#;

fn metrics(port: u16) -> String {
    get(port, "/metrics").map(|r| r.body).unwrap_or_default()
}

/// `token length N` as the worker prints it for `value`.
fn length_line(value: &Canary) -> String {
    format!("token length {}", value.value().len())
}

#[test]
fn a_refreshed_command_runs_again_and_its_new_value_restarts_the_worker() {
    let sb = Sandbox::new();
    // The helper prints `MY_TOKEN=value` unquoted from a shell: letters and digits.
    let (first, second) = (Canary::alnum("first-"), Canary::alnum("second-value-"));
    sb.write("value", first.value());
    sb.config(&format!("{}{WORKER}", source(&sb, "refresh = \"5s\"")));
    let runs = sb.path().join("runs");
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for(&length_line(&first), PATIENCE);
    let at_start = count_runs(&runs);
    // Unchanged: the command runs again, nothing restarts.
    run.wait_for("refreshing command `sh` (source #1)", PATIENCE);
    run.wait_for("every running replica already has these values", PATIENCE);
    assert!(count_runs(&runs) > at_start);
    // Changed: the next refresh rolls it out, as a watched file's change would.
    sb.write("value", second.value());
    run.wait_for("MY_TOKEN changed", PATIENCE);
    run.wait_for(&length_line(&second), PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    first.assert_absent(&run);
    second.assert_absent(&run);
}

#[test]
fn a_failing_refresh_keeps_the_old_values_backs_off_and_is_counted() {
    let sb = Sandbox::new();
    let kept = Canary::alnum("kept-");
    sb.write("value", kept.value());
    let cfg = format!("{}{WORKER}", source(&sb, "refresh = \"5s\""));
    let (mut run, port) = spawn_with_health_port(|port| {
        sb.config(&format!(
            "[supervisor]\nhealth = \"127.0.0.1:{port}\"\n{cfg}"
        ));
        sb.spawn(&["run", "--no-color"])
    });
    run.wait_for(&length_line(&kept), PATIENCE);
    sb.write("fail", "");
    let line = run.wait_for(
        "refresh of command `sh` (source #1) failed (1 in a row)",
        PATIENCE,
    );
    assert!(
        line.contains("keeping the old values, trying again in 5s"),
        "{line}"
    );
    // The tool's stderr follows in the report, the value it echoed redacted.
    run.wait_for(
        "vault: error talking to server; token [redacted:MY_TOKEN]",
        PATIENCE,
    );
    let line = run.wait_for("failed (2 in a row)", PATIENCE);
    assert!(
        line.contains("trying again in 5s"),
        "capped at the period: {line}"
    );
    // The status is published just after the line is logged: polled.
    let counted = wait_until(PATIENCE, || {
        let text = metrics(port);
        text.contains("agentsup_source_refresh_consecutive_failures{source=\"1\",program=\"sh\"} 2")
            && text.contains(
                "agentsup_source_refreshes_total{source=\"1\",program=\"sh\",result=\"failed\"} 2",
            )
    });
    assert!(counted, "{}", metrics(port));
    // Recovery: the next refresh succeeds and the count of failures resets.
    std::fs::remove_file(sb.path().join("fail")).unwrap();
    let ok = wait_until(PATIENCE, || {
        metrics(port)
            .contains("agentsup_source_refresh_consecutive_failures{source=\"1\",program=\"sh\"} 0")
    });
    assert!(ok, "{}", metrics(port));
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    let out = run.output();
    assert_eq!(
        out.matches(&length_line(&kept)).count(),
        1,
        "restarted:\n{out}"
    );
    kept.assert_absent(&run);
}

#[test]
fn ttl_pointer_refreshes_at_two_thirds_of_the_lease() {
    let sb = Sandbox::new();
    // A Vault-style answer with a 7.5 s lease: refreshed every 5 s.
    sb.script(
        "vault.sh",
        "echo run >> runs\necho '{\"lease_duration\": 7.5, \"data\": {\"MY_TOKEN\": \"leased-value-0001\"}}'\n",
    );
    sb.config(&format!(
        "[[source]]\ntype = \"command\"\ncommand = [\"sh\", \"vault.sh\"]\nformat = \"json\"\njson_pointer = \"/data\"\nttl_pointer = \"/lease_duration\"\n{WORKER}"
    ));
    let runs = sb.path().join("runs");
    let t0 = std::time::Instant::now();
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("token length 17", PATIENCE);
    let first = count_runs(&runs);
    run.wait_for("refreshing command `sh` (source #1)", PATIENCE);
    // Not before two thirds of the lease (5 s) after the start-up load.
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    assert!(wait_until(PATIENCE, || count_runs(&runs) > first));
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

#[test]
fn check_rejects_refresh_on_other_sources_and_ttl_pointer_without_json() {
    let sb = Sandbox::new();
    sb.config("[[source]]\ntype = \"dir\"\npath = \"s\"\nrefresh = \"5m\"\n");
    let out = sb.run(&["check"]);
    out.assert_code(78);
    out.assert_contains("does not take `refresh`");
    sb.config("[[source]]\ntype = \"command\"\ncommand = [\"true\"]\nttl_pointer = \"/lease_duration\"\nrefresh = \"1s\"\n");
    let out = sb.run(&["check"]);
    out.assert_code(78);
    out.assert_contains("`ttl_pointer` needs format = \"json\"");
    out.assert_contains("`refresh` must be at least 5s");
}
