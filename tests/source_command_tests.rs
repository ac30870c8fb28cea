//! `command` sources as a secret store's helper (issue 12): what they print is
//! registered with the redactor before anything about them is reported, they get a
//! minimal environment, their stdout cannot be reopened through /proc, and a
//! credential in their argv is warned about.

use crate::support::*;

#[test]
fn a_failing_json_helper_never_shows_what_it_printed() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    // A number in the JSON is registered too.
    let lease = Canary::digits(10);
    sb.write("key.txt", key.value());
    sb.write("lease.txt", lease.value());
    // Prints the value as a vault would, then echoes it on stderr and fails.
    sb.write(
        "vault.py",
        r#"import json, sys
key = open("key.txt").read()
lease = int(open("lease.txt").read())
print(json.dumps({"data": {"OPENAI_API_KEY": key, "lease": lease}}))
sys.stdout.flush()
print("error: could not renew " + key, file=sys.stderr)
print("lease %d expired" % lease, file=sys.stderr)
sys.exit(2)
"#,
    );
    sb.config(
        r#"
[[source]]
type = "command"
command = ["python3", "vault.py"]
format = "json"
json_pointer = "/data"

[[worker]]
name = "planner"
command = ["sh", "-c", "true"]
keys = ["OPENAI_API_KEY"]
"#,
    );
    for args in [&["check"][..], &["check", "--format", "json"][..]] {
        let out = sb.run(args);
        out.assert_code(78)
            .assert_contains("command `python3`")
            .assert_contains("exited with status 2")
            .assert_contains("[redacted:OPENAI_API_KEY]")
            .assert_contains("[redacted:lease]");
        out.assert_no_leak(&key).assert_no_leak(&lease);
    }
    // `run` reports the same failure, with the same care.
    let out = sb.run(&["run"]);
    out.assert_code(78)
        .assert_contains("command `python3`")
        .assert_no_leak(&key)
        .assert_no_leak(&lease);
}

/// A helper that reports, as dotenv, what its fd 1 is, and whether it can reopen
/// its own stdout through /proc, as another process of the same uid would.
const INSPECTOR: &str = r#"import os
fd1 = os.readlink("/proc/self/fd/1")
fd2 = os.readlink("/proc/self/fd/2")
try:
    os.close(os.open("/proc/%d/fd/1" % os.getpid(), os.O_RDONLY | os.O_NONBLOCK))
    reopen = "opened"
except OSError as e:
    reopen = "refused-" + str(e.errno)
print("FD1=%s" % fd1)
print("FD2=%s" % fd2)
print("REOPEN=%s" % reopen)
"#;

#[test]
fn a_helper_gets_a_minimal_environment_and_a_socket_for_stdout() {
    let sb = Sandbox::new();
    sb.write("inspect.py", INSPECTOR);
    // `env` prints its whole environment as NAME=value lines: the first source
    // holds exactly what a helper is given.
    sb.config(
        r#"
[env]
inherit = ["PATH", "HOME"]

[[source]]
type = "command"
command = ["env"]
env = ["VAULT_ADDR", "VAULT_TOKEN"]

[[source]]
type = "command"
command = ["python3", "inspect.py"]

[[worker]]
name = "w"
command = ["sh", "-c", "true"]
keys = ["VAULT_ADDR", "FD1", "FD2", "REOPEN"]
"#,
    );
    let (vault, other) = (Canary::new("hvs."), Canary::new("sk-ant-"));
    let env = [
        ("VAULT_ADDR", "http://127.0.0.1:8200"),
        ("VAULT_TOKEN", vault.value()),
        ("OTHER_WORKER_API_KEY", other.value()),
        ("UNLISTED", "1"),
    ];
    let out = sb.run_env(&["check", "--format", "json"], &env);
    out.assert_code(0)
        .assert_no_leak(&vault)
        .assert_no_leak(&other);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // HOME and PATH (`[env] inherit`), VAULT_ADDR and VAULT_TOKEN (`env`).
    assert_eq!(doc["sources"][0]["count"], 4, "{doc:#}");

    let out = sb.run_env(&["env", "w", "--format", "json", "--reveal"], &env);
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["VAULT_ADDR"]["source"], "command `env`", "{doc:#}");
    let fd1 = doc["FD1"]["value"].as_str().unwrap();
    assert!(fd1.starts_with("socket:"), "stdout is {fd1}, not a socket");
    let fd2 = doc["FD2"]["value"].as_str().unwrap();
    assert!(fd2.starts_with("socket:"), "stderr is {fd2}, not a socket");
    // ENXIO: the kernel does not open a socket through /proc/<pid>/fd.
    assert_eq!(doc["REOPEN"]["value"], "refused-6", "{doc:#}");
}

#[test]
fn check_warns_about_a_token_in_a_helpers_argv() {
    let sb = Sandbox::new();
    let (token, password) = (Canary::new("hvs."), Canary::new("pw-"));
    sb.write("vault.py", "print('LOG_LEVEL=debug')\n");
    sb.config(&format!(
        r#"
[[source]]
type = "command"
command = ["python3", "vault.py", '-token={}', "--password", {}]

[[worker]]
name = "planner"
command = ["sh", "-c", "true"]
"#,
        token.value(),
        password.toml()
    ));
    let out = sb.run(&["check", "--format", "json"]);
    out.assert_code(0)
        .assert_no_leak(&token)
        .assert_no_leak(&password)
        .assert_contains("/proc/<pid>/cmdline");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let f = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "helper-argv")
        .unwrap_or_else(|| panic!("no helper-argv finding: {doc:#}"));
    assert_eq!(f["severity"], "warning");
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains("-token=…") && msg.contains("--password …"),
        "{msg}"
    );
}

#[test]
fn a_reread_registers_what_a_failing_helper_printed_before_reporting_it() {
    let keys = RotationKeys::new();
    let sb = Sandbox::new();
    let runtime = sb.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    sb.write("key.txt", keys.old.value());
    // Succeeds until `fail` exists; then prints the new value, echoes it on
    // stderr, and fails, as a vault whose lease renewal broke might.
    sb.write(
        "vault.py",
        r#"import json, os, sys
key = open("key.txt").read()
print(json.dumps({"data": {"OPENAI_API_KEY": key}}))
if os.path.exists("fail"):
    sys.stdout.flush()
    print("renewal failed for " + key, file=sys.stderr)
    sys.exit(2)
"#,
    );
    sb.config(
        r#"
[[source]]
type = "command"
command = ["python3", "vault.py"]
format = "json"
json_pointer = "/data"

[[worker]]
name = "planner"
command = ["sh", "-c", "echo planner-up; exec sleep 1000"]
keys = ["OPENAI_API_KEY"]
"#,
    );
    let with_runtime = |args: &[&str]| {
        let mut c = sb.cmd(args);
        c.env("XDG_RUNTIME_DIR", &runtime);
        c
    };
    let mut run = sb.spawn_cmd(with_runtime(&["run", "--no-color"]));
    run.wait_for("planner-up", PATIENCE);

    sb.write("key.txt", keys.new.value());
    sb.write("fail", "");
    let out = sb.run_cmd(with_runtime(&["reload"]));
    out.assert_code(1)
        .assert_contains("exited with status 2")
        .assert_contains("[redacted:OPENAI_API_KEY]");
    keys.assert_absent(&out);

    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    keys.assert_absent(&run);
}

/// A command source's `user`: the helper runs as that account, with its HOME;
/// an unknown user, or `user` on another kind of source, fails `check` by line.
#[test]
fn a_helper_runs_as_its_sources_user() {
    let sb = Sandbox::new();
    let config = |user: &str, kind: &str| {
        format!(
            r#"
[env]
inherit = ["PATH", "HOME"]

[[source]]
type = "{kind}"
{body}
user = "{user}"

[[worker]]
name = "w"
command = ["true"]
keys = ["HELPER_ID"]
"#,
            body = if kind == "command" {
                r#"command = ["sh", "-c", "echo HELPER_ID=uid-$(id -u)-gid-$(id -g)-home-$HOME"]"#
            } else {
                r#"path = "secrets""#
            }
        )
    };
    sb.config(&config("no-such-user-agentsup", "command"));
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("supervisor.toml:")
        .assert_contains("source #1 (type = \"command\")")
        .assert_contains("no-such-user-agentsup");
    sb.write("secrets/HELPER_ID", "x");
    sb.config(&config("nobody", "dir"));
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("does not take `user`");
    if !crate::contain_tests::is_root() {
        // Not root: switching is refused by `check`, by line.
        sb.config(&config("nobody", "command"));
        sb.run(&["check"]).assert_code(78).assert_contains("root");
        return;
    }
    sb.config(&config("nobody", "command"));
    let out = sb.run(&["env", "w", "--format", "json", "--reveal"]);
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let id = doc["HELPER_ID"]["value"].as_str().unwrap();
    assert!(id.starts_with("uid-65534-gid-65534-home-"), "{id}");
    assert!(!id.ends_with("home-/root"), "HOME stayed agentsup's: {id}");
}
