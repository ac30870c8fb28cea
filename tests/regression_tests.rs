//! Regressions found in review, one test each (see the commit that added them).

use crate::support::*;

const KEY: &str = "sk-proj-leakedviafile0123456789abcdefABCDEF";

#[test]
fn a_key_pasted_into_a_file_variable_is_never_printed() {
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY_FILE={KEY}\n"));
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nkeys = [\"OPENAI_API_KEY\"]\n");
    for args in [
        vec!["check"],
        vec!["check", "--format", "json"],
        vec!["run"],
        vec!["env", "w"],
    ] {
        let out = sb.run(&args);
        out.assert_code(78)
            .assert_no_leak(KEY)
            .assert_no_leak(&KEY[8..30]);
    }
    sb.run(&["check"]).assert_contains("OPENAI_API_KEY_FILE");
}

#[test]
fn a_failing_secret_command_never_echoes_agentsups_own_token() {
    const TOKEN: &str = "hvs.CAESIJsupersecretvaulttoken";
    let sb = Sandbox::new();
    sb.config(
        r#"
[[source]]
type = "command"
command = ["sh", "-c", "echo MY_TOKEN=abcdefgh; echo \"vault: permission denied for token $VAULT_TOKEN\" >&2; exit 2"]

[[worker]]
name = "w"
command = ["true"]
keys = ["MY_TOKEN"]
"#,
    );
    let out = sb.run_env(&["check"], &[("VAULT_TOKEN", TOKEN)]);
    out.assert_code(78)
        .assert_no_leak(TOKEN)
        .assert_contains("exited with status 2")
        .assert_contains("[redacted:VAULT_TOKEN]");
}

#[test]
fn a_pasted_token_line_in_dotenv_is_not_echoed() {
    const FERNET: &str = "gAAAAABk-Zx_9fQ3mS2LwP0kHc8d7Yq1TnV6uR4eJ5aB0xW3sI2oM";
    let sb = Sandbox::new();
    sb.write(".env", format!("{FERNET}=\nOK_KEY=value123\n"));
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nkeys = [\"OK_KEY\"]\n");
    sb.run(&["check"])
        .assert_code(78)
        .assert_no_leak(FERNET)
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
fn exec_of_a_missing_program_exits_127() {
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
    sb.write(".env", "LANGSMITH_X=\"ab\\0cd\"\n");
    sb.write("secrets/LANGSMITH_Y", b"ab\0cd");
    sb.config(
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n\n[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nkeys = [\"LANGSMITH_*\"]\n",
    );
    sb.run(&["run"])
        .assert_code(78)
        .assert_contains("LANGSMITH_Y")
        .assert_contains("NUL byte");
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
