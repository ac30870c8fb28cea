//! Regressions found in review, one test each (see the commit that added them).

use crate::support::*;

#[test]
fn a_key_pasted_into_a_file_variable_is_never_printed() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write(".env", key.dotenv("OPENAI_API_KEY_FILE"));
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nkeys = [\"OPENAI_API_KEY\"]\n");
    for args in [
        vec!["check"],
        vec!["check", "--format", "json"],
        vec!["run"],
        vec!["env", "w"],
    ] {
        let out = sb.run(&args);
        out.assert_code(78).assert_no_leak(&key);
    }
    // The default `.env` was loaded and its file variable read (a missing `.env`
    // would also exit 78 and print no key): the finding is located there.
    sb.run(&["check"])
        .assert_contains("OPENAI_API_KEY_FILE")
        .assert_contains(".env:1");
}

#[test]
fn a_failing_secret_command_never_echoes_agentsups_own_token() {
    let token = Canary::new("hvs.");
    let sb = Sandbox::new();
    sb.config(
        r#"
[[source]]
type = "command"
command = ["sh", "-c", "echo MY_TOKEN=abcdefgh; echo \"vault: permission denied for token $VAULT_TOKEN\" >&2; exit 2"]
env = ["VAULT_TOKEN"]

[[worker]]
name = "w"
command = ["true"]
keys = ["MY_TOKEN"]
"#,
    );
    let out = sb.run_env(&["check"], &[("VAULT_TOKEN", token.value())]);
    out.assert_code(78)
        .assert_no_leak(&token)
        .assert_contains("exited with status 2")
        .assert_contains("[redacted:VAULT_TOKEN]");
}

#[test]
fn a_pasted_token_line_in_dotenv_is_not_echoed() {
    // A Fernet token is URL-safe base64: no quote or backslash to carry.
    let fernet = Canary::alnum("gAAAAABk-");
    let sb = Sandbox::new();
    sb.write(".env", format!("{}=\nOK_KEY=value123\n", fernet.value()));
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nkeys = [\"OK_KEY\"]\n");
    sb.run(&["check"])
        .assert_code(78)
        .assert_no_leak(&fernet)
        .assert_contains(".env:1");
}

#[test]
fn an_absurd_duration_is_a_config_error_not_a_panic() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nstop_timeout = \"300000000000y\"\n");
    let out = sb.run(&["check"]);
    out.assert_code(78).assert_contains("supervisor.toml:4");
    assert!(!out.all().contains("panicked"), "{}", out.all());
}

#[test]
fn exec_of_a_missing_path_exits_127_and_a_bad_key_pattern_2() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\n");
    sb.run(&["exec", "--keys", "NOTHING_*", "--", "/nonexistent/prog"])
        .assert_code(127)
        .assert_contains("/nonexistent/prog");
    sb.run(&["exec", "--keys", "BAD KEY", "--", "true"])
        .assert_code(2);
}

#[test]
fn a_nul_byte_in_a_glob_matched_value_stops_before_start() {
    let sb = Sandbox::new();
    // A real NUL in each source (`"\0"` in a dotenv file is not an escape: it
    // stays a backslash and a zero). The `.env` is listed as a source: with any
    // `[[source]]` given, the default `.env` is not read.
    sb.write(".env", "LANGSMITH_X=ab\0cd\n");
    sb.write("secrets/LANGSMITH_Y", b"ab\0cd");
    sb.config(
        "[[source]]\ntype = \"dotenv\"\npath = \".env\"\n\n[[source]]\ntype = \"dir\"\npath = \"secrets\"\n\n[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nkeys = [\"LANGSMITH_*\"]\n",
    );
    let out = sb.run(&["run"]);
    out.assert_code(78)
        .assert_contains("LANGSMITH_X")
        .assert_contains(".env:1")
        .assert_contains("LANGSMITH_Y")
        .assert_contains("NUL byte");
    assert_eq!(
        out.all().matches("holds a NUL byte").count(),
        2,
        "{}",
        out.all()
    );
}

#[test]
fn a_secret_command_that_leaves_a_background_process_is_not_a_timeout() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[source]]
type = "command"
command = ["sh", "-c", "sleep 30 & echo MY_TOKEN=abcdefgh123"]
timeout = "10s"

[[worker]]
name = "w"
command = ["true"]
keys = ["MY_TOKEN"]
"#,
    );
    // Before the fix this waited for the 10 s timeout and failed the source.
    sb.run(&["check"]).assert_code(0);
}

#[test]
fn check_reports_a_command_that_run_could_not_start() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"ghost\"\ncommand = [\"no-such-program-xyz\"]\n");
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("ghost")
        .assert_contains("no-such-program-xyz");
}

/// SPEC 5: "a crash-looping source command is itself backed off". A worker that
/// fails auth every ~50 ms asks for a re-read each time; once the secret command
/// fails, re-reads for auth failures wait 1 s, 2 s, 4 s …, and the command runs
/// once per announced re-read, never in between.
#[test]
fn a_failing_secret_command_is_backed_off_while_a_worker_keeps_failing_auth() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write("key.env", key.dotenv("OPENAI_API_KEY"));
    let runs = sb.path().join("runs.txt");
    let broken = sb.path().join("broken");
    sb.config(&format!(
        r#"
[[source]]
type = "command"
command = ["sh", "-c", "if [ -f '{broken}' ]; then echo fail >> '{runs}'; echo 'vault: connection refused' >&2; exit 2; fi; echo ok >> '{runs}'; cat key.env"]

[[worker]]
name = "agent"
command = ["sh", "-c", "echo \"openai.AuthenticationError: Error code: 401 - {{'error': {{'message': 'Incorrect API key provided: sk-proj-****CDEF.', 'type': 'invalid_request_error', 'param': None, 'code': 'invalid_api_key'}}}}\" >&2; exit 1"]
keys = ["OPENAI_API_KEY"]
backoff = {{ initial = "10ms", max = "50ms", jitter = 0.0 }}
auth = {{ max_delay = "50ms" }}
"#,
        broken = broken.display(),
        runs = runs.display(),
    ));
    let mut run = sb.spawn(&["run", "--log-format", "json"]);
    run.wait_for("its keys are unchanged", PATIENCE);
    std::fs::write(&broken, "").unwrap();
    for hold in ["now wait 1s", "now wait 2s", "now wait 4s"] {
        run.wait_for(hold, PATIENCE);
    }
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let out = run.output();
    key.assert_absent(&run);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let failed_at: Vec<chrono_free::Millis> = lines
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("Re-reads for auth failures now wait"))
        })
        .map(|v| chrono_free::parse(v["ts"].as_str().unwrap()))
        .collect();
    let fails = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .filter(|l| *l == "fail")
        .count();
    assert_eq!(
        fails,
        failed_at.len(),
        "a command run nobody announced:\n{out}"
    );
    assert!(failed_at.len() >= 3, "{out}");
    // Each hold was kept: 1 s between the first two failures, then 2 s.
    let gap = |a: usize| chrono_free::elapsed(failed_at[a], failed_at[a + 1]);
    assert!(gap(0) >= 1000, "{failed_at:?}\n{out}");
    assert!(gap(1) >= 2000, "{failed_at:?}\n{out}");
    let auth_failures = out.matches("class auth").count();
    assert!(
        auth_failures > failed_at.len(),
        "the worker was not failing auth meanwhile:\n{out}"
    );
}

/// RFC 3339 timestamps of agentsup's JSON log, as milliseconds within the day:
/// enough to compare two moments of one short run without a date crate.
mod chrono_free {
    pub type Millis = i64;

    pub fn parse(ts: &str) -> Millis {
        // 2026-11-23T14:59:01.123Z (the time of day is what a test spans).
        let time = ts.split('T').nth(1).unwrap().trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: i64 = parts.next().unwrap().parse().unwrap();
        let m: i64 = parts.next().unwrap().parse().unwrap();
        let s: f64 = parts.next().unwrap().parse().unwrap();
        (h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as i64
    }

    /// From `a` to a later `b`, across midnight too.
    pub fn elapsed(a: Millis, b: Millis) -> Millis {
        (b - a).rem_euclid(86_400_000)
    }
}
