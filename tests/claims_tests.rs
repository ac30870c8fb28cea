//! Claims of SPEC and docs/ that had no test of their own (issue 11 step 7):
//! stop signals, start-up interrupted, `on_give_up = "exit"`, a config-class exit,
//! output drained at shutdown, `[keys.X] secret = true`, source precedence and
//! `*_FILE` across sources, the layers of the built environment, the same
//! environment from `run`, `env` and `exec`, and stdin from /dev/null.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;

/// A worker that ignores SIGTERM, so only a kill stops it.
const DEAF: &str = r#"
[[worker]]
name = "deaf"
command = ["sh", "-c", "trap '' TERM; echo \"deaf up $$\"; while :; do sleep 1; done"]
"#;

#[test]
fn a_second_sigterm_kills_at_once() {
    let sb = Sandbox::new();
    // A minute of grace: only the second signal can end the run quickly.
    sb.config(&format!(
        "[supervisor]\nshutdown_timeout = \"60s\"\n{DEAF}stop_timeout = \"60s\"\n"
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    let pid = run.announced_pids(1, "deaf up ")[0];
    run.signal(15);
    run.wait_for("received SIGTERM", PATIENCE);
    assert!(alive(pid), "the deaf worker died of the first SIGTERM");
    let t = Instant::now();
    run.signal(15);
    let code = run.wait_exit(PATIENCE);
    let took = t.elapsed();
    assert!(code.is_some(), "agentsup did not exit:\n{}", run.output());
    assert!(
        took < Duration::from_secs(10),
        "the second SIGTERM took {took:?} to end the run (grace was 60 s)\n{}",
        run.output()
    );
    assert_all_die(&[pid], "the deaf worker", "a second SIGTERM");
}

#[test]
fn sigint_and_sigquit_stop_every_worker_and_exit_0() {
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGQUIT, "SIGQUIT")] {
        let sb = Sandbox::new();
        sb.config(
            r#"
[[worker]]
name = "w"
command = ["sh", "-c", "echo \"w up $$\"; exec sleep 1000"]
replicas = 2
"#,
        );
        let mut run = sb.spawn(&["run", "--no-color"]);
        let pids = run.announced_pids(2, "w up ");
        run.signal(sig);
        assert_eq!(
            run.wait_exit(PATIENCE),
            Some(0),
            "{name}:\n{}",
            run.output()
        );
        assert!(
            run.output().contains(&format!("received {name}")),
            "{name}:\n{}",
            run.output()
        );
        assert_all_die(&pids, "worker", name);
    }
}

#[test]
fn sigterm_during_start_up_starts_nothing() {
    // `probe = true`: before anything starts, agentsup asks the provider, here a
    // server that accepts and never answers, so start-up is held until the
    // SIGTERM arrives.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write(".env", key.dotenv("OPENAI_API_KEY"));
    sb.config(&format!(
        r#"
[supervisor]
probe = true

[[worker]]
name = "w"
command = ["sh", "-c", "touch started; exec sleep 1000"]
keys = ["OPENAI_API_KEY"]
vars = {{ OPENAI_BASE_URL = "http://127.0.0.1:{port}/v1" }}
"#
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    // The probe's connection: agentsup is in start-up now.
    let (conn, _) = silent.accept().expect("the probe connects");
    run.signal(15);
    let code = run.wait_exit(PATIENCE);
    drop(conn);
    assert_eq!(code, Some(0), "{}", run.output());
    assert!(!sb.path().join("started").exists(), "a worker was started");
    assert!(!run.output().contains("running (pid"), "{}", run.output());
    key.assert_absent(&run);
}

#[test]
fn on_give_up_exit_stops_the_other_workers() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[supervisor]
on_give_up = "exit"

[[worker]]
name = "steady"
command = ["sh", "-c", "echo \"steady up $$\"; exec sleep 1000"]
replicas = 2

[[worker]]
name = "crasher"
command = ["sh", "-c", "[ -e go ] || { echo waiting; while [ ! -e go ]; do sleep 0.05; done; }; exit 3"]
max_restarts = 2
backoff = { initial = "20ms", max = "50ms", jitter = 0.0 }
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    let pids = run.announced_pids(2, "steady up ");
    sb.write("go", "");
    assert_eq!(run.wait_exit(PATIENCE), Some(1), "{}", run.output());
    assert_all_die(&pids, "the steady worker", "the give-up of another worker");
    let out = run.output();
    assert!(out.contains("failed"), "{out}");
}

#[test]
fn a_config_class_exit_runs_once_and_is_never_restarted() {
    let sb = Sandbox::new();
    // openai-python's own message for a missing key: a config problem, which a
    // restart cannot fix.
    let message = std::fs::read_to_string(
        repo().join("tests/fixtures/sdk_output/openai-python-missing-key.txt"),
    )
    .unwrap();
    sb.write("message.txt", message);
    // on_give_up = "keep": with the default "exit" agentsup is gone within
    // milliseconds of the failure, and whether `status` sees `failed` first was a
    // race the test lost on a loaded machine.
    sb.config(
        r#"
[supervisor]
on_give_up = "keep"

[[worker]]
name = "nokey"
command = ["sh", "-c", "echo run >> runs.txt; cat message.txt >&2; exit 1"]
restart = "always"
backoff = { initial = "20ms", max = "50ms", jitter = 0.0 }

[[worker]]
name = "steady"
command = ["sh", "-c", "echo \"steady up $$\"; exec sleep 1000"]
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("class config", PATIENCE);
    run.wait_for("nokey.0", PATIENCE);
    // Whatever happens next happens in the same step as the classification; the
    // status a moment later shows the replica's final state.
    let mut state = String::new();
    assert!(
        wait_until(PATIENCE, || {
            let out = sb.run(&["status", "--format", "json"]);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            state = v["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["worker"] == "nokey")
                .map(|r| r["state"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            state == "failed"
        }),
        "nokey is {state:?}, not failed\n{}",
        run.output()
    );
    run.signal(15);
    run.wait_exit(PATIENCE).expect("agentsup exits on SIGTERM");
    assert_eq!(
        count_runs(&sb.path().join("runs.txt")),
        1,
        "{}",
        run.output()
    );
}

#[test]
fn output_printed_while_stopping_is_drained_before_exit() {
    let sb = Sandbox::new();
    // On SIGTERM the worker prints 2000 numbered lines, then exits.
    sb.config(
        r#"
[[worker]]
name = "talker"
command = ["sh", "-c", "trap 'i=0; while [ $i -lt 2000 ]; do echo \"bye $i\"; i=$((i+1)); done; echo \"last line\"; exit 0' TERM; echo up; while :; do sleep 0.05; done"]
stop_timeout = "30s"
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("talker.0 | up", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let out = run.output();
    let byes = out
        .lines()
        .filter(|l| l.starts_with("talker.0") && l.contains("| bye "))
        .count();
    assert_eq!(byes, 2000, "lines lost at shutdown");
    let last = out.lines().position(|l| l.contains("| last line"));
    let stopped = out
        .lines()
        .position(|l| l.contains("talker.0") && l.contains("-> stopped"));
    assert!(
        last.is_some() && (stopped.is_none() || last < stopped),
        "the worker's last line came after its stop event, or never:\n{}",
        &out[out.len().saturating_sub(2000)..]
    );
}

#[test]
fn keys_secret_true_redacts_a_dotenv_value_with_an_ordinary_name() {
    let sb = Sandbox::new();
    let value = Canary::new("");
    // `MODEL_SETTING` does not look secret; `[keys] secret = true` makes it so.
    sb.write(".env", value.dotenv("MODEL_SETTING"));
    sb.config(
        r#"
[keys.MODEL_SETTING]
secret = true

[[source]]
type = "dotenv"
path = ".env"

[[worker]]
name = "w"
command = ["sh", "-c", "echo \"setting is $MODEL_SETTING\""]
keys = ["MODEL_SETTING"]
restart = "never"
"#,
    );
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(0)
        .assert_contains("setting is [redacted:MODEL_SETTING]")
        .assert_no_leak(&value);
    let env = sb.run(&["env", "w", "--format", "json"]);
    env.assert_code(0).assert_no_leak(&value);
    let doc: serde_json::Value = serde_json::from_str(&env.stdout).unwrap();
    assert_eq!(doc["MODEL_SETTING"]["secret"], true, "{doc:#}");
}

/// `env WORKER --reveal --format json` as name → (value, source).
fn revealed(
    sb: &Sandbox,
    worker: &str,
    extra_env: &[(&str, &str)],
) -> BTreeMap<String, (String, String)> {
    let out = sb.run_env(&["env", worker, "--reveal", "--format", "json"], extra_env);
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    doc.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (
                    v["value"].as_str().unwrap_or("").to_string(),
                    v["source"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_later_source_wins_and_file_variables_follow_the_same_order() {
    let sb = Sandbox::new();
    let (b1, b2) = (Canary::new("b1-"), Canary::new("b2-"));
    sb.write("b1.txt", b1.value());
    sb.write("b2.txt", b2.value());
    sb.write("c.txt", "from-c-file-0123");
    // A: set by dotenv and by dir: dir (later) wins.
    // B: only through B_FILE, set by dotenv and by dir: dir's file wins.
    // C: set by dotenv, and C_FILE by the env source (last): a set C beats any
    //    C_FILE, wherever it comes from.
    sb.write(
        ".env",
        "A=from-dotenv-0123\nB_FILE=b1.txt\nC=from-dotenv-0123\n",
    );
    sb.write("secrets/A", "from-dir-0123");
    sb.write("secrets/B_FILE", "b2.txt");
    sb.config(
        r#"
[[source]]
type = "dotenv"
path = ".env"

[[source]]
type = "dir"
path = "secrets"

[[source]]
type = "env"

[[worker]]
name = "w"
command = ["true"]
keys = ["A", "B", "C"]
"#,
    );
    let env = revealed(&sb, "w", &[("C_FILE", "c.txt")]);
    assert_eq!(env["A"].0, "from-dir-0123", "{env:?}");
    assert!(env["A"].1.ends_with("secrets/A"), "{env:?}");
    assert_eq!(env["B"].0, b2.value());
    assert!(env["B"].1.contains("via B_FILE"), "{env:?}");
    assert_eq!(env["C"].0, "from-dotenv-0123", "{env:?}");
    assert!(
        !env.contains_key("B_FILE") && !env.contains_key("C_FILE"),
        "{env:?}"
    );

    // Reversed order: dotenv last now wins for A and B_FILE.
    let cfg = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    sb.config(&cfg.replacen(
        "[[source]]\ntype = \"dotenv\"\npath = \".env\"\n\n[[source]]\ntype = \"dir\"\npath = \"secrets\"\n",
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n\n[[source]]\ntype = \"dotenv\"\npath = \".env\"\n",
        1,
    ));
    let env = revealed(&sb, "w", &[]);
    assert_eq!(env["A"].0, "from-dotenv-0123", "{env:?}");
    assert_eq!(env["B"].0, b1.value());
}

#[test]
fn the_environment_is_built_in_layers_in_the_documented_order() {
    let sb = Sandbox::new();
    sb.write(".env", "LAYERED=from-key\nONLY_KEY=key-0123\n");
    // 1 inherit < 2 keys < 3 agentsup's defaults < 4 [env] vars < worker vars <
    // 5 AGENTSUP_*.
    sb.config(
        r#"
[env]
inherit = ["PATH", "LAYERED", "INHERITED_ONLY"]
vars = { LAYERED_VARS = "env-vars", BOTH_VARS = "env-vars" }

[[source]]
type = "dotenv"
path = ".env"

[[worker]]
name = "w"
command = ["true"]
keys = ["LAYERED", "ONLY_KEY"]
vars = { BOTH_VARS = "worker-vars", PYTHONUNBUFFERED = "0" }
"#,
    );
    let env = revealed(
        &sb,
        "w",
        &[("LAYERED", "inherited"), ("INHERITED_ONLY", "inherited")],
    );
    let value = |k: &str| env.get(k).map(|v| v.0.as_str()).unwrap_or("<unset>");
    // A declared key beats an inherited variable.
    assert_eq!(value("LAYERED"), "from-key", "{env:?}");
    assert_eq!(value("INHERITED_ONLY"), "inherited");
    assert_eq!(value("ONLY_KEY"), "key-0123");
    // The worker's vars beat [env] vars, and agentsup's PYTHONUNBUFFERED default.
    assert_eq!(value("BOTH_VARS"), "worker-vars");
    assert_eq!(value("LAYERED_VARS"), "env-vars");
    assert_eq!(value("PYTHONUNBUFFERED"), "0");
    assert_eq!(value("PYTHON_DOTENV_DISABLED"), "1");
    assert_eq!(value("AGENTSUP_WORKER"), "w");

    // Nothing overrides AGENTSUP_*: a worker's vars naming one are ignored.
    let cfg = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    sb.config(&cfg.replace(
        "PYTHONUNBUFFERED = \"0\" }",
        "PYTHONUNBUFFERED = \"0\", AGENTSUP_WORKER = \"impostor\" }",
    ));
    let env = revealed(&sb, "w", &[]);
    assert_eq!(env["AGENTSUP_WORKER"], ("w".into(), "agentsup".into()));
}

#[test]
fn run_env_and_exec_build_the_same_environment() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write(
        ".env",
        format!("{}MODEL=gpt-4o-mini\n", key.dotenv("OPENAI_API_KEY")),
    );
    sb.write("secrets/DIR_TOKEN", Canary::new("dir-").value());
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH", "LANG"]
vars = {{ LOG_LEVEL = "info" }}

[[source]]
type = "dotenv"
path = ".env"

[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "dump"
command = ["{py}", "{dump}", "from-run.json"]
keys = ["OPENAI_API_KEY", "MODEL", "DIR_*"]
vars = {{ ROLE = "planner" }}
restart = "never"
"#,
        py = python(),
        dump = fixture("print_env.py"),
    ));
    let extra = [("LANG", "C.UTF-8"), ("UNDECLARED", "nope")];
    sb.run_env(&["run", "--no-color"], &extra)
        .assert_code(0)
        .assert_no_leak(&key);
    let py = python();
    let dump = fixture("print_env.py");
    sb.run_env(
        &[
            "exec",
            "--worker",
            "dump",
            "--",
            &py,
            &dump,
            "from-exec.json",
        ],
        &extra,
    )
    .assert_code(0)
    .assert_no_leak(&key);
    let read = |f: &str| -> BTreeMap<String, String> {
        serde_json::from_str(&std::fs::read_to_string(sb.path().join(f)).unwrap()).unwrap()
    };
    let from_run = read("from-run.json");
    let from_exec = read("from-exec.json");
    let from_env: BTreeMap<String, String> = revealed(&sb, "dump", &extra)
        .into_iter()
        .map(|(k, (v, _))| (k, v))
        .collect();
    // python3 may add LC_CTYPE (locale coercion) to its own environment.
    let strip = |mut m: BTreeMap<String, String>| {
        m.remove("LC_CTYPE");
        m
    };
    assert_eq!(
        strip(from_run.clone()),
        strip(from_env.clone()),
        "run vs env"
    );
    assert_eq!(strip(from_exec), strip(from_env), "exec vs env");
    assert_eq!(from_run["OPENAI_API_KEY"], key.value());
    assert!(
        from_run.keys().any(|k| k.starts_with("DIR_")),
        "{from_run:?}"
    );
}

#[test]
fn spawned_workers_read_stdin_from_dev_null() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "w"
command = ["sh", "-c", "echo \"stdin is $(readlink /proc/self/fd/0)\"; if read line; then echo \"read: $line\"; else echo \"stdin at EOF\"; fi"]
restart = "never"
"#,
    );
    // agentsup's own stdin is a pipe holding a line: a worker must not see it.
    let mut c = sb.cmd(&["run", "--no-color"]);
    c.stdin(std::process::Stdio::piped());
    let mut run = sb.spawn_cmd(c);
    {
        use std::io::Write;
        let mut stdin = run.child.as_mut().unwrap().stdin.take().unwrap();
        let _ = stdin.write_all(b"agentsup's own input\n");
        // Kept open until the worker has read, so EOF is the worker's /dev/null.
        run.wait_for_match(
            |l| l.contains("stdin at EOF") || l.contains("read: "),
            PATIENCE,
        )
        .unwrap_or_else(|| panic!("the worker never read its stdin:\n{}", run.output()));
        drop(stdin);
    }
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let out = run.output();
    assert!(out.contains("stdin is /dev/null"), "{out}");
    assert!(!out.contains("read: "), "{out}");
}
