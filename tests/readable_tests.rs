//! Output a person reads at 80 columns (issue 15): the README's first run (check
//! report, start-up, a key rotation with one auth failure per replica, Ctrl-C) on a
//! terminal of 80 columns prints no line of agentsup's own over 100 characters,
//! every wrapped line keeps the `agentsup | ` label, and the rotation's summary
//! line says what happened. Worker lines are the workers' and are not measured.
//!
//! The config mirrors the demo's (`supervisor.toml`): a dotenv file with the `#`
//! warning, a watched secret directory, a Python worker with two replicas and a
//! long-named one, and a "provider" (a key file the workers compare against) that
//! revokes the old key before the new one lands. No network port, so it can run
//! next to anything.

use crate::support::*;

/// Calls the "provider" every 0.3 s: the key it was given must be the one the
/// provider accepts now; a revoked one ends the process the way the openai SDK
/// does (a traceback whose last line is the 401 message, status 1).
const WORKER: &str = r#"
import os, sys, time
key = os.environ["OPENAI_API_KEY"]
name = "%s.%s" % (os.environ["AGENTSUP_WORKER"], os.environ["AGENTSUP_REPLICA"])
print(name + " up", flush=True)
n = 0
while True:
    n += 1
    with open("provider/accepted_key") as f:
        accepted = f.read().strip()
    if key != accepted:
        print("Traceback (most recent call last):", file=sys.stderr)
        print("openai.AuthenticationError: Error code: 401 - {'error': {'message': "
              "'Incorrect API key provided: " + key[:8] + "*" * (len(key) - 12) + key[-4:] +
              ". You can find your "
              "API key at https://platform.openai.com/account/api-keys.', 'code': "
              "'invalid_api_key'}}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("call %d answered" % n, flush=True)
    time.sleep(0.3)
"#;

fn config(python: &str) -> String {
    format!(
        r#"
[supervisor]
shutdown_timeout = "5s"

[env]
inherit = ["PATH", "HOME", "LANG"]

[[source]]
type = "dotenv"
path = "demo.env"

[[source]]
type = "dir"
path = "secrets"

[keys.OPENAI_API_KEY]
provider = "openai"

[[worker]]
name = "planner"
command = ["{python}", "worker.py"]
replicas = 2
keys = ["OPENAI_API_KEY", "MODEL", "LANGSMITH_PROJECT"]
backoff = {{ initial = "30s", max = "30s" }}
auth = {{ max_delay = "30s" }}

[[worker]]
name = "summarizer"
command = ["{python}", "worker.py"]
keys = ["OPENAI_API_KEY", "MODEL"]
backoff = {{ initial = "30s", max = "30s" }}
auth = {{ max_delay = "30s" }}
"#
    )
}

/// The sandbox, with `keys.old` in the secret directory and accepted by the
/// "provider".
fn sandbox() -> (Sandbox, RotationKeys) {
    let sb = Sandbox::new();
    let keys = RotationKeys::new();
    sb.config(&config(&python()));
    sb.write("worker.py", WORKER);
    sb.write(
        "demo.env",
        "MODEL=gpt-4o-mini\n# the check warns about this one\nLANGSMITH_PROJECT=agents#demo\n",
    );
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.old.value()));
    sb.write("provider/accepted_key", format!("{}\n", keys.old.value()));
    (sb, keys)
}

/// A worker's line: `planner.0    | …` (its label, padding, the bar).
fn is_worker_line(line: &str) -> bool {
    let label = line.split(' ').next().unwrap_or("");
    ["planner.0", "planner.1", "summarizer.0"].contains(&label) && line.contains(" | ")
}

#[test]
fn first_run_and_a_rotation_fit_an_80_column_terminal() {
    let (sb, keys) = sandbox();
    let mut cmd = sb.cmd(&["run", "--no-color"]);
    cmd.env("COLUMNS", "80");
    let mut run = sb.spawn_cmd(cmd);
    run.wait_for_all(
        &["planner.0 up", "planner.1 up", "summarizer.0 up"],
        PATIENCE,
    );

    // The provider revokes the old key: every replica fails once and waits 30 s.
    sb.write("provider/accepted_key", format!("{}\n", keys.new.value()));
    let each_failed_once = run.wait_output(PATIENCE, |out, _| {
        out.matches("class auth").count() >= 3 && out.matches("its keys are unchanged").count() >= 3
    });
    assert!(each_failed_once, "{}", run.output());
    // The new key lands in the watched directory: all three restart at once.
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.new.value()));
    // On the whole output: the watcher's header, the rotation summary after it and
    // a first answer on the new key may come in any order.
    let rotated = run.wait_output(PATIENCE, |out, _| {
        let out = out.replace("\nagentsup     |     ", " ");
        out.find("a watched source changed: re-reading")
            .is_some_and(|at| out[at..].contains("rotation: "))
            && out.contains("call 1 answered")
    });
    assert!(rotated, "{}", run.output());
    run.signal(2);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let out = run.output();

    keys.assert_absent(&run);
    // A headline wrapped at 80 columns continues on lines indented by 4.
    let joined = out.replace("\nagentsup     |     ", " ");
    assert!(
        joined.contains("rotation: 3 waiting replicas restarted with the new values"),
        "the summary must count the replicas restarted just before it:\n{out}"
    );
    // Whichever re-read sees the new key first (the watcher's, or one queued by an
    // auth failure) counts the restarts; a later one finds nothing left to do and
    // says that, never that nothing changed.
    assert!(
        !joined.contains("environment changed; nothing to restart"),
        "the summary contradicts the restarts above it:\n{out}"
    );
    let ours: Vec<&str> = out.lines().filter(|l| !is_worker_line(l)).collect();
    assert!(ours.len() > 20, "{out}");
    let longest = ours.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for line in &ours {
        assert!(
            line.chars().count() <= 100,
            "a line of agentsup's own is {} characters at 80 columns (issue 15: at most \
             100):\n{line}\n\nwhole output:\n{out}",
            line.chars().count()
        );
    }
    // Wrapped for the terminal: event lines fit 80 except a word longer than a line.
    assert!(longest <= 80, "longest line {longest}:\n{out}");
    // After the report, every line of agentsup's, wrapped or not, is labelled.
    let report_end = out.find("agentsup     | ").expect("labelled lines");
    for line in out[report_end..].lines().filter(|l| !is_worker_line(l)) {
        assert!(
            line.starts_with("agentsup     | "),
            "unlabelled: {line:?}\n{out}"
        );
    }
    // The per-replica changes come after the header that announces them.
    let header = [
        "a watched source changed: re-reading",
        "re-read sources: new values for replicas waiting",
    ]
    .iter()
    .filter_map(|h| joined.find(h))
    .min()
    .unwrap_or_else(|| panic!("no header:\n{out}"));
    for label in ["planner.0", "planner.1", "summarizer.0"] {
        let changed = joined
            .find(&format!("{label}: OPENAI_API_KEY changed"))
            .unwrap_or_else(|| panic!("no change line for {label}:\n{out}"));
        assert!(
            changed > header,
            "{label}'s change before the header:\n{out}"
        );
    }
    // The auth exit's headline carries the class; its detail follows, indented.
    let headline = out
        .lines()
        .position(|l| l.contains("running -> backoff, status 1, class auth"))
        .unwrap_or_else(|| panic!("no auth headline:\n{out}"));
    let detail: Vec<&str> = out.lines().skip(headline + 1).take(6).collect();
    assert!(
        detail
            .iter()
            .any(|l| l.starts_with("agentsup     |   pid ") && l.contains(": matched")),
        "{out}"
    );
}

#[test]
fn piped_output_keeps_one_line_per_event() {
    // Without a terminal width (a pipe, a log file) nothing wraps: grep finds an
    // event's whole sentence on one line.
    let (sb, keys) = sandbox();
    sb.write("provider/accepted_key", format!("{}\n", keys.new.value()));
    let mut run = sb.spawn(&["run", "--no-color"]);
    let line = run.wait_for("class auth", PATIENCE);
    assert!(
        line.contains("running -> backoff (pid ")
            && line.contains("the key it echoed is the injected OPENAI_API_KEY"),
        "{line}"
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

#[test]
fn env_table_fits_80_columns_and_wraps_values_only() {
    let (sb, keys) = sandbox();
    let long_path = format!(
        "{}:/usr/bin:/bin",
        "/opt/some/very/long/tool/directory/bin".repeat(4)
    );
    let mut cmd = sb.cmd(&["env", "planner"]);
    cmd.env("COLUMNS", "80").env("PATH", &long_path);
    cmd.stdout(std::process::Stdio::piped());
    let out = cmd.output().expect("agentsup env");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{line:?}\n{text}");
    }
    // Labels whole, the long value continued under VALUE.
    let rows: Vec<&str> = text.lines().collect();
    let path_row = rows.iter().position(|l| l.starts_with("PATH ")).unwrap();
    assert!(rows[path_row].ends_with("process env"), "{text}");
    assert!(
        rows[path_row + 1].starts_with("    "),
        "PATH's value continues: {text}"
    );
    assert!(text.contains("OPENAI_API_KEY"), "{text}");
    keys.old.assert_absent(&("agentsup env", text.as_bytes()));
}

/// The demo in the repo, as the README runs it: its sources have long paths
/// (`examples/demo/secrets/OPENAI_API_KEY`), which count toward the width too.
#[test]
fn env_table_of_the_demo_fits_80_and_120_columns() {
    for columns in [80usize, 120] {
        let out = std::process::Command::new(bin())
            .args(["env", "planner"])
            .current_dir(repo())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("COLUMNS", columns.to_string())
            .output()
            .expect("agentsup env");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines() {
            let n = line.chars().count();
            assert!(n <= columns, "{n} > {columns} columns: {line:?}\n{text}");
        }
        // Labels whole at the start of their row; a short value (the demo's base
        // URL) whole on its row, not cut mid-URL.
        for name in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "MODEL", "PATH"] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name}: {text}"
            );
        }
        let url_row = text
            .lines()
            .find(|l| l.starts_with("OPENAI_BASE_URL "))
            .unwrap();
        assert!(url_row.contains("\"http://127.0.0.1:8799/v1\""), "{text}");
        // The key's source is there in full, wrapped or not.
        let squeezed: String = text.split_whitespace().collect();
        assert!(
            squeezed.contains("examples/demo/secrets/OPENAI_API_KEY"),
            "{text}"
        );
    }
}

/// `--help` wraps to the terminal (`COLUMNS` here, as clap's `wrap_help` reads it
/// before asking the terminal): no help line over 80 columns at 80.
#[test]
fn help_fits_80_columns() {
    let sb = Sandbox::new();
    for sub in [
        "", "init", "check", "env", "run", "exec", "status", "restart", "reload",
    ] {
        let args: Vec<&str> = [sub, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let out = sb.run_env(&args, &[("COLUMNS", "80")]);
        out.assert_code(0);
        assert!(out.stdout.contains("Usage: agentsup"), "{}", out.all());
        for line in out.stdout.lines() {
            let n = line.chars().count();
            assert!(n <= 80, "`agentsup {sub} --help`: {n} columns: {line:?}");
        }
    }
}

/// The demo's workers number the calls the provider answered: started before the
/// provider (as `agentsup run` starts the demo), the first answered call is
/// "call 1", not "call 2" (the refused connection is not a call).
#[test]
fn demo_workers_count_answered_calls_only() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-demo-");
    let port = free_port();
    let worker = |file: &str| {
        repo()
            .join("examples/demo")
            .join(file)
            .display()
            .to_string()
    };
    sb.write(".env", key.dotenv("OPENAI_API_KEY"));
    sb.config(&format!(
        r#"
[supervisor]
shutdown_timeout = "5s"
[[source]]
type = "dotenv"
path = ".env"
[env]
vars = {{ OPENAI_BASE_URL = "http://127.0.0.1:{port}/v1", CALL_INTERVAL = "0.3" }}
[[worker]]
name = "py"
command = ["{python}", "{py}"]
keys = ["OPENAI_API_KEY"]
[[worker]]
name = "node"
command = ["node", "{mjs}"]
keys = ["OPENAI_API_KEY"]
"#,
        python = python(),
        py = worker("worker.py"),
        mjs = worker("worker.mjs"),
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    let refused = |label: &'static str| {
        move |l: &str| l.starts_with(label) && l.contains("provider not reachable yet")
    };
    run.wait_for_match(refused("py.0 "), PATIENCE)
        .expect("py refused first");
    run.wait_for_match(refused("node.0 "), PATIENCE)
        .expect("node refused first");
    let _provider = FakeProvider::openai_on(port, key.value());
    // From the whole output: a line-by-line wait for one worker would swallow the
    // other's lines.
    let first_call = |label: &str| {
        run.output()
            .lines()
            .find(|l| l.starts_with(label) && l.contains("| call "))
            .map(str::to_string)
    };
    let both = wait_until(PATIENCE, || {
        first_call("py.0 ").is_some() && first_call("node.0 ").is_some()
    });
    assert!(both, "no call answered:\n{}", run.output());
    for label in ["py.0 ", "node.0 "] {
        let first = first_call(label).unwrap();
        assert!(
            first.contains("| call 1: provider answered"),
            "{first}\n{}",
            run.output()
        );
    }
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// A newcomer's first typos (a misspelt enum value, a misspelt worker name) end
/// in an error that fits an 80-column terminal, wrapped under its first line;
/// piped without `COLUMNS`, it stays one line.
#[test]
fn error_lines_wrap_to_80_columns() {
    let sb = Sandbox::new();
    sb.config(
        "[supervisor]\nshutdown_timeout = \"5s\"\n[[source]]\ntype = \"dotnev\"\n\n[[worker]]\nname = \"planner\"\ncommand = [\"true\"]\n",
    );
    let mut c = sb.cmd(&["check"]);
    c.env("COLUMNS", "80");
    let out = sb.run_cmd(c);
    out.assert_code(78)
        .assert_contains("did you mean `dotenv`?");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() > 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("agentsup: error: supervisor.toml:4:"),
        "{}",
        out.stderr
    );
    for l in &lines {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(
        lines[1..].iter().all(|l| l.starts_with("    ")),
        "{}",
        out.stderr
    );
    let piped = sb.run(&["check"]);
    assert_eq!(piped.stderr.lines().count(), 1, "{}", piped.stderr);

    sb.config("[[worker]]\nname = \"planner\"\ncommand = [\"true\"]\n");
    let mut c = sb.cmd(&["env", "planer"]);
    c.env("COLUMNS", "80");
    let out = sb.run_cmd(c);
    out.assert_contains("planner");
    for l in out.stderr.lines() {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
}
