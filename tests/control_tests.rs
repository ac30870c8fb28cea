//! The control socket with the real binary and real workers: `status`, `restart`,
//! `reload`, the socket's place and mode, one supervisor per config, and the stale
//! socket of a killed run.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// A sandbox with its own `XDG_RUNTIME_DIR` (`<sandbox>/run`, 0700 like a real one).
pub(crate) struct Ctl {
    pub(crate) sb: Sandbox,
    pub(crate) runtime: PathBuf,
}

impl Ctl {
    pub(crate) fn new(config: &str) -> Ctl {
        let sb = Sandbox::new();
        sb.config(config);
        let runtime = sb.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        Ctl { sb, runtime }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.sb.cmd(args);
        c.env("XDG_RUNTIME_DIR", &self.runtime);
        c
    }

    pub(crate) fn start(&self) -> Running {
        self.sb.spawn_cmd(self.cmd(&["run", "--no-color"]))
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.sb.run_cmd(self.cmd(args))
    }

    /// `agentsup status --format json`, parsed.
    pub(crate) fn status(&self) -> Value {
        let out = self.run(&["status", "--format", "json"]);
        out.assert_code(0);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status JSON: {e}\n{}", out.stdout))
    }

    /// Pids of every replica by `worker.N`, once the supervisor answers and every
    /// replica runs.
    pub(crate) fn running_pids(&self, expect: usize) -> Vec<(String, i32)> {
        let mut last = String::new();
        let mut pids = Vec::new();
        let ok = wait_until(PATIENCE, || {
            let out = self.run(&["status", "--format", "json"]);
            last = out.all();
            let Ok(v) = serde_json::from_str::<Value>(&out.stdout) else {
                return false;
            };
            let reps = v["replicas"].as_array().unwrap();
            pids = pids_of(&v);
            reps.len() == expect
                && reps
                    .iter()
                    .all(|r| r["state"] == "running" && r["pid"].is_u64())
        });
        assert!(ok, "replicas not all running: {last}");
        pids
    }

    /// The only socket in the runtime dir.
    pub(crate) fn socket(&self) -> PathBuf {
        let dir = self.runtime.join("agentsup");
        let socks: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sock"))
            .collect();
        assert_eq!(socks.len(), 1, "{socks:?}");
        socks[0].clone()
    }
}

pub(crate) fn pids_of(status: &Value) -> Vec<(String, i32)> {
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!("{}.{}", r["worker"].as_str().unwrap(), r["replica"]),
                r["pid"].as_i64().map(|p| p as i32).unwrap_or(0),
            )
        })
        .collect()
}

pub(crate) fn pid(pids: &[(String, i32)], label: &str) -> i32 {
    pids.iter()
        .find(|(l, _)| l == label)
        .unwrap_or_else(|| panic!("no {label} in {pids:?}"))
        .1
}

/// The process's command line, NULs as spaces.
fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Two workers, `alpha` with two replicas; each prints its pid and then is `sleep`.
const TWO_WORKERS: &str = r#"
[[worker]]
name = "alpha"
command = ["sh", "-c", "echo \"alpha up $$\"; exec sleep 1000"]
replicas = 2

[[worker]]
name = "beta"
command = ["sh", "-c", "echo \"beta up $$\"; exec sleep 1000"]
"#;

#[test]
fn status_lists_every_replica_with_state_and_pid_in_text_and_json() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut run = ctl.start();
    let pids = ctl.running_pids(3);
    let labels: Vec<&str> = pids.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["alpha.0", "alpha.1", "beta.0"]);
    for (label, p) in &pids {
        assert!(alive(*p), "{label}: pid {p} is not alive");
        assert!(
            cmdline(*p).contains("sleep 1000"),
            "{label}: {}",
            cmdline(*p)
        );
    }
    let json = ctl.status();
    assert_eq!(json["pid"], run.pid());
    assert!(json["uptime_secs"].as_f64().unwrap() >= 0.0);

    let out = ctl.run(&["status"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains(&format!("pid {}", run.pid())),
        "{}",
        out.stdout
    );
    let header = lines[1];
    for col in [
        "WORKER",
        "REPLICA",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
    ] {
        assert!(header.contains(col), "{header}");
    }
    // Aligned: every column starts where its header does.
    let pid_col = header.find("PID").unwrap();
    let state_col = header.find("STATE").unwrap();
    for (row, (label, p)) in lines[2..].iter().zip(&pids) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let (worker, replica) = label.split_once('.').unwrap();
        assert_eq!(
            &cells[..4],
            [worker, replica, &p.to_string(), "running"],
            "{row}"
        );
        assert_eq!(row.find(&p.to_string()), Some(pid_col), "{}", out.stdout);
        assert_eq!(&row[state_col..state_col + 7], "running", "{}", out.stdout);
        // uptime humanized ("3s", "1m02s"), restarts, last exit.
        assert!(cells[4].ends_with('s') || cells[4].ends_with('m'), "{row}");
        assert_eq!(&cells[5..], ["0", "-"], "{row}");
    }
    assert_eq!(lines.len(), 2 + pids.len(), "{}", out.stdout);

    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

#[test]
fn socket_is_private_in_the_runtime_dir_and_removed_on_clean_exit() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut run = ctl.start();
    ctl.running_pids(3);
    let sock = ctl.socket();
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        sock.display()
    );
    let dir = std::fs::metadata(ctl.runtime.join("agentsup")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let name = sock.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("supervisor-"), "{name}");
    // `run` says where it is.
    run.wait_for(&format!("control socket: {}", sock.display()), PATIENCE);
    // The same config reached through a symlinked directory and a relative path
    // finds the same supervisor.
    let link = ctl.sb.path().join("link");
    std::os::unix::fs::symlink(ctl.sb.path(), &link).unwrap();
    let mut c = ctl.cmd(&["status", "-c", "supervisor.toml"]);
    c.current_dir(&link);
    ctl.sb.run_cmd(c).assert_code(0).assert_contains("alpha");

    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    assert!(!sock.exists(), "socket left behind after a clean exit");
}

#[test]
fn without_a_runtime_dir_the_socket_is_beside_the_config() {
    let sb = Sandbox::new();
    sb.config(TWO_WORKERS);
    let mut run = sb.spawn(&["run", "--no-color"]);
    let sock = sb.path().join(".supervisor.agentsup.sock");
    assert!(
        wait_until(PATIENCE, || sock.exists()),
        "no {}:\n{}",
        sock.display(),
        run.output()
    );
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(wait_until(PATIENCE, || {
        let out = sb.run(&["status"]);
        out.code == Some(0) && out.stdout.matches(" running ").count() == 3
    }));
    // $AGENTSUP_CONFIG finds it too, from another directory.
    let cfg = sb.path().join("supervisor.toml");
    let mut c = sb.cmd(&["status", "--format", "json"]);
    c.current_dir("/").env("AGENTSUP_CONFIG", &cfg);
    let out = sb.run_cmd(c);
    out.assert_code(0).assert_contains("\"beta\"");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

#[test]
fn restart_one_replica_then_a_whole_worker_one_at_a_time() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut run = ctl.start();
    let before = ctl.running_pids(3);

    let out = ctl.run(&["restart", "alpha.1"]);
    out.assert_code(0).assert_contains("alpha.1");
    let mut after = Vec::new();
    assert!(
        wait_until(PATIENCE, || {
            after = pids_of(&ctl.status());
            let p = pid(&after, "alpha.1");
            p != 0 && p != pid(&before, "alpha.1") && alive(p)
        }),
        "alpha.1 was not restarted: {after:?}\n{}",
        run.output()
    );
    assert_eq!(pid(&after, "alpha.0"), pid(&before, "alpha.0"));
    assert_eq!(pid(&after, "beta.0"), pid(&before, "beta.0"));
    assert!(!alive(pid(&before, "alpha.1")));
    let after = ctl.running_pids(3);

    // The whole worker: both replicas get new pids, never both down at once.
    ctl.run(&["restart", "alpha"]).assert_code(0);
    let mut last = Vec::new();
    assert!(
        wait_until(PATIENCE, || {
            let s = ctl.status();
            let reps = s["replicas"].as_array().unwrap();
            let alpha_up = reps
                .iter()
                .filter(|r| r["worker"] == "alpha" && r["state"] == "running")
                .count();
            assert!(alpha_up >= 1, "both alpha replicas down at once: {s:#}");
            last = pids_of(&s);
            alpha_up == 2
                && pid(&last, "alpha.0") != pid(&after, "alpha.0")
                && pid(&last, "alpha.1") != pid(&after, "alpha.1")
        }),
        "alpha was not restarted: {last:?}\n{}",
        run.output()
    );
    assert_eq!(pid(&last, "beta.0"), pid(&before, "beta.0"));
    let s = ctl.status();
    let restarts: Vec<u64> = s["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["restarts"].as_u64().unwrap())
        .collect();
    assert_eq!(restarts, [1, 2, 0], "{s:#}");

    // Unknown targets are refused (exit 1) with the workers there are.
    ctl.run(&["restart", "gamma"])
        .assert_code(1)
        .assert_contains("alpha, beta");
    ctl.run(&["restart", "alpah.0"])
        .assert_code(1)
        .assert_contains("did you mean \"alpha\"?");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// Replaces `.env` in one step, so the source watcher never reads half a file.
fn write_env(sb: &Sandbox, content: &str) {
    sb.write(".env.tmp", content);
    std::fs::rename(sb.path().join(".env.tmp"), sb.path().join(".env")).unwrap();
}

#[test]
fn reload_restarts_only_the_changed_replica_and_refuses_bad_values() {
    // `next-start`: the watcher adopts new values without restarting anything, so
    // what restarts below is `reload`'s doing.
    let ctl = Ctl::new(
        r#"
[supervisor]
on_rotation = "next-start"

[[source]]
type = "dotenv"
path = ".env"

[keys.OPENAI_API_KEY]
provider = "openai"

[[worker]]
name = "alpha"
command = ["sh", "-c", "echo \"alpha up $$\"; exec sleep 1000"]
keys = ["OPENAI_API_KEY"]

[[worker]]
name = "beta"
command = ["sh", "-c", "echo \"beta up $$\"; exec sleep 1000"]
keys = ["B_TOKEN"]
"#,
    );
    let keys = RotationKeys::new();
    write_env(
        &ctl.sb,
        &format!(
            "{}B_TOKEN=unchanged-value\n",
            keys.old.dotenv("OPENAI_API_KEY")
        ),
    );
    let mut run = ctl.start();
    let before = ctl.running_pids(2);

    // Nothing changed: accepted, nothing restarts.
    ctl.run(&["reload"])
        .assert_code(0)
        .assert_contains("restarting 0 replica");

    // A trailing space (kept by the quotes) and a placeholder are refused with the
    // reason, and the old workers keep running.
    for (bad, why) in [
        (
            format!("\"{} \"", keys.old.dotenv_double_quoted_inner()),
            "ends with a space",
        ),
        ("changeme".to_string(), "placeholder"),
    ] {
        write_env(
            &ctl.sb,
            &format!("OPENAI_API_KEY={bad}\nB_TOKEN=unchanged-value\n"),
        );
        let out = ctl.run(&["reload"]);
        out.assert_code(1)
            .assert_contains("OPENAI_API_KEY")
            .assert_contains(why)
            .assert_contains("keeping the old ones")
            .assert_no_leak(&keys.old);
        assert_eq!(pids_of(&ctl.status()), before, "{}", run.output());
    }

    // A good new value: only alpha restarts. (A reload that lands while the source
    // watcher's re-read of the previous, bad, file is still in flight shares that
    // re-read's refusal; asking again gets a fresh one.)
    write_env(
        &ctl.sb,
        &format!(
            "{}B_TOKEN=unchanged-value\n",
            keys.new.dotenv("OPENAI_API_KEY")
        ),
    );
    let mut out = ctl.run(&["reload"]);
    assert!(
        wait_until(PATIENCE, || {
            if out.code != Some(0) {
                out = ctl.run(&["reload"]);
            }
            out.code == Some(0)
        }),
        "{}",
        out.all()
    );
    out.assert_contains("restarting 1 replica");
    let mut after = Vec::new();
    assert!(
        wait_until(PATIENCE, || {
            after = ctl.running_pids(2);
            pid(&after, "alpha.0") != pid(&before, "alpha.0")
        }),
        "alpha was not restarted: {after:?}\n{}",
        run.output()
    );
    assert_eq!(pid(&after, "beta.0"), pid(&before, "beta.0"));
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    keys.assert_absent(&run);
}

#[test]
fn a_second_run_of_the_same_config_is_refused_and_the_first_keeps_running() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut first = ctl.start();
    let before = ctl.running_pids(3);
    let sock = ctl.socket();

    let out = ctl.run(&["run", "--no-color"]);
    out.assert_code(78)
        .assert_contains("already supervising")
        .assert_contains(&format!("pid {}", first.pid()))
        .assert_contains(&sock.display().to_string());
    // It refused before starting anything.
    assert!(!out.stdout.contains("up "), "{}", out.all());

    assert!(alive(first.pid()));
    assert_eq!(ctl.running_pids(3), before);
    assert!(sock.exists(), "the refused run removed the live socket");
    // A different config in the same directory has its own socket and runs.
    ctl.sb.write(
        "other.toml",
        "[[worker]]\nname = \"o\"\ncommand = [\"sh\", \"-c\", \"echo other up; exec sleep 1000\"]\n",
    );
    let other = ctl
        .sb
        .spawn_cmd(ctl.cmd(&["run", "--no-color", "-c", "other.toml"]));
    other.wait_for("other up", PATIENCE);
    ctl.run(&["status", "-c", "other.toml"])
        .assert_code(0)
        .assert_contains(&format!("pid {}", other.pid()));
    drop(other);

    first.signal(15);
    assert_eq!(first.wait_exit(PATIENCE), Some(0), "{}", first.output());
}

#[test]
fn after_sigkill_the_stale_socket_is_reported_then_replaced() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut first = ctl.start();
    let before = ctl.running_pids(3);
    let sock = ctl.socket();
    signal(first.pid(), 9);
    // Reaped, so every descriptor it had (the listening socket too) is closed.
    assert_eq!(first.wait_exit(PATIENCE), Some(128 + 9));
    for (_, p) in &before {
        assert!(wait_until(PATIENCE, || !alive(*p)), "worker {p} survived");
    }
    assert!(sock.exists(), "a SIGKILLed run cannot clean up");
    ctl.run(&["status"])
        .assert_code(1)
        .assert_contains("left over")
        .assert_contains(&sock.display().to_string());

    let mut second = ctl.start();
    let after = ctl.running_pids(3);
    assert_eq!(ctl.status()["pid"], second.pid());
    for ((_, a), (_, b)) in after.iter().zip(&before) {
        assert_ne!(a, b);
    }
    second.signal(15);
    assert_eq!(second.wait_exit(PATIENCE), Some(0), "{}", second.output());
    drop(first);
}

#[test]
fn clients_without_a_supervisor_name_the_config_and_the_socket() {
    let ctl = Ctl::new(TWO_WORKERS);
    let cfg = std::fs::canonicalize(ctl.sb.path().join("supervisor.toml")).unwrap();
    for args in [&["status"][..], &["restart", "alpha"], &["reload"]] {
        let out = ctl.run(args);
        out.assert_code(1)
            .assert_contains("no agentsup run is serving")
            .assert_contains(&cfg.display().to_string())
            .assert_contains(&ctl.runtime.join("agentsup").display().to_string());
    }
    // No config at all is the usual config error.
    let out = ctl.run(&["status", "-c", "missing.toml"]);
    out.assert_code(78).assert_contains("missing.toml");
}

/// Talks to the socket directly: one request line, one answer line.
fn ask(stream: &mut UnixStream, line: &[u8]) -> Value {
    stream.write_all(line).unwrap();
    let mut answer = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn malformed_and_oversized_requests_get_an_error_answer() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut run = ctl.start();
    ctl.running_pids(3);
    let sock = ctl.socket();
    let connect = |p: &Path| {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    };
    let mut s = connect(&sock);
    let bad = ask(&mut s, b"this is not json\n");
    assert_eq!(bad["ok"], false);
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("malformed request"),
        "{bad}"
    );
    let bad = ask(&mut s, b"{\"cmd\":\"explode\"}\n");
    assert_eq!(bad["ok"], false);
    // The same connection still serves a good request.
    let good = ask(&mut s, b"{\"cmd\":\"status\"}\n");
    assert_eq!(good["ok"], true);
    assert_eq!(good["status"]["replicas"].as_array().unwrap().len(), 3);

    let mut s = connect(&sock);
    let mut huge = vec![b'x'; 200 * 1024];
    huge.push(b'\n');
    // The server may close before reading it all; only the answer matters.
    let _ = s.write_all(&huge);
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["message"].as_str().unwrap().contains("too long"), "{v}");

    // And the supervisor is unharmed.
    assert_eq!(ctl.status()["replicas"].as_array().unwrap().len(), 3);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// Waits until `worker`'s replica 0 runs with a pid other than `before` and the
/// status JSON counts a restart for it; returns `counters.restarts[worker]`.
fn restart_reasons_once_restarted(ctl: &Ctl, run: &Running, worker: &str, before: i32) -> Value {
    let label = format!("{worker}.0");
    let mut reasons = Value::Null;
    assert!(
        wait_until(PATIENCE, || {
            let s = ctl.status();
            let now = pids_of(&s);
            reasons = s["counters"]["restarts"][worker].clone();
            let running = s["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["worker"] == worker && r["state"] == "running");
            running
                && pid(&now, &label) != before
                && pid(&now, &label) != 0
                && reasons.as_object().is_some_and(|m| !m.is_empty())
        }),
        "{worker} was not restarted (restarts: {reasons})\n{}",
        run.output()
    );
    reasons
}

#[test]
fn restart_reasons_count_a_manual_restart() {
    // counters.restarts is keyed by (worker, reason); it must still be JSON.
    let ctl = Ctl::new(TWO_WORKERS);
    let mut run = ctl.start();
    let before = ctl.running_pids(3);
    ctl.run(&["restart", "beta"]).assert_code(0);
    let reasons = restart_reasons_once_restarted(&ctl, &run, "beta", pid(&before, "beta.0"));
    assert_eq!(
        reasons,
        serde_json::json!({"manual": 1}),
        "{}",
        run.output()
    );
    // Nothing was counted for the worker that was not restarted.
    let alpha = ctl.status()["counters"]["restarts"]["alpha"].clone();
    assert!(
        alpha.is_null() || alpha == serde_json::json!({}),
        "alpha: {alpha}"
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

#[test]
fn restart_reasons_count_a_rotation() {
    let token = Canary::new("tok-");
    let ctl = Ctl::new(
        r#"
[[source]]
type = "dotenv"
path = ".env"

[[worker]]
name = "w"
command = ["sh", "-c", "echo \"w up $$\"; exec sleep 1000"]
keys = ["W_TOKEN"]
"#,
    );
    write_env(&ctl.sb, "W_TOKEN=first-value-0123\n");
    let mut run = ctl.start();
    let before = ctl.running_pids(1);
    // The watched `.env` changes: the watcher's re-read restarts the replica.
    write_env(&ctl.sb, &token.dotenv("W_TOKEN"));
    let reasons = restart_reasons_once_restarted(&ctl, &run, "w", pid(&before, "w.0"));
    assert_eq!(
        reasons,
        serde_json::json!({"rotation": 1}),
        "{}",
        run.output()
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    token.assert_absent(&run);
}

#[test]
fn restart_reasons_count_a_reload() {
    let token = Canary::new("tok-");
    // A `command` source is not watched: only the reload re-reads it.
    let ctl = Ctl::new(
        r#"
[[source]]
type = "command"
command = ["cat", "tokens.env"]

[[worker]]
name = "w"
command = ["sh", "-c", "echo \"w up $$\"; exec sleep 1000"]
keys = ["W_TOKEN"]
"#,
    );
    ctl.sb.write("tokens.env", "W_TOKEN=first-value-0123\n");
    let mut run = ctl.start();
    let before = ctl.running_pids(1);
    ctl.sb.write("tokens.env", token.dotenv("W_TOKEN"));
    ctl.run(&["reload"])
        .assert_code(0)
        .assert_contains("restarting 1 replica")
        .assert_no_leak(&token);
    let reasons = restart_reasons_once_restarted(&ctl, &run, "w", pid(&before, "w.0"));
    assert_eq!(
        reasons,
        serde_json::json!({"reload": 1}),
        "{}",
        run.output()
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    token.assert_absent(&run);
}

#[test]
fn restart_reasons_count_a_clean_exit_restarted_by_always() {
    // The first run exits 0 (and leaves a marker); `restart = "always"` starts it
    // again, and that run stays up.
    let ctl = Ctl::new(
        r#"
[[worker]]
name = "w"
command = ["sh", "-c", "if [ -e ran ]; then echo \"w up $$\"; exec sleep 1000; fi; touch ran; exit 0"]
restart = "always"
backoff = { initial = "50ms", jitter = 0.0 }
"#,
    );
    let mut run = ctl.start();
    run.wait_for("w up", PATIENCE);
    let reasons = restart_reasons_once_restarted(&ctl, &run, "w", 0);
    assert_eq!(reasons, serde_json::json!({"ok": 1}), "{}", run.output());
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// The lock files of the run of `config` in `ctl`, named after its socket: in the
/// runtime dir and in `/tmp/agentsup-<uid>`.
fn lock_files(ctl: &Ctl, socket: &Path) -> [PathBuf; 2] {
    let name = socket.with_extension("lock");
    let name = name.file_name().unwrap();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    [
        ctl.runtime.join("agentsup").join(name),
        PathBuf::from(format!("/tmp/agentsup-{uid}")).join(name),
    ]
}

#[test]
fn lock_files_go_at_a_clean_exit_and_a_killed_runs_at_the_next_start() {
    let ctl = Ctl::new(TWO_WORKERS);
    ctl.sb.write(
        "other.toml",
        "[[worker]]\nname = \"o\"\ncommand = [\"sh\", \"-c\", \"echo other up; exec sleep 1000\"]\n",
    );
    // A run of `other` killed with SIGKILL leaves its socket and its lock files.
    let mut killed = ctl
        .sb
        .spawn_cmd(ctl.cmd(&["run", "--no-color", "-c", "other.toml"]));
    killed.wait_for("other up", PATIENCE);
    let killed_socket = ctl.socket();
    let killed_locks = lock_files(&ctl, &killed_socket);
    for l in &killed_locks {
        assert!(l.exists(), "no lock file {}", l.display());
    }
    signal(killed.pid(), 9);
    assert_eq!(killed.wait_exit(PATIENCE), Some(128 + 9));
    assert!(killed_socket.exists() && killed_locks.iter().all(|l| l.exists()));

    // The next start of any config sharing those directories removes them (in
    // the background, once it runs).
    let mut run = ctl.start();
    ctl.running_pids(3);
    for l in &killed_locks {
        assert!(
            wait_until(PATIENCE, || !l.exists()),
            "a killed run's lock file stays: {}",
            l.display()
        );
    }
    assert!(
        wait_until(PATIENCE, || !killed_socket.exists()),
        "a killed run's socket stays"
    );
    let socket = ctl.socket();
    let locks = lock_files(&ctl, &socket);
    for l in &locks {
        assert!(l.exists(), "no lock file {}", l.display());
    }
    // Another run of it is still refused, and leaves the live one's lock alone.
    ctl.run(&["run", "--no-color"])
        .assert_code(78)
        .assert_contains("already supervising");
    assert!(locks.iter().all(|l| l.exists()));

    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    for l in &locks {
        assert!(
            !l.exists(),
            "lock file left after a clean exit: {}",
            l.display()
        );
    }
    assert!(!socket.exists());
}

#[test]
fn runs_started_together_leave_exactly_one_supervisor() {
    let ctl = Ctl::new(TWO_WORKERS);
    let mut runs: Vec<Running> = (0..3).map(|_| ctl.start()).collect();
    // Every run but one refuses; none may be left half-started.
    let mut refused = 0;
    assert!(
        wait_until(PATIENCE, || {
            refused = runs
                .iter_mut()
                .filter_map(|r| r.child.as_mut().unwrap().try_wait().ok().flatten())
                .filter(|st| st.code() == Some(78))
                .count();
            refused == 2
        }),
        "{refused} of 3 refused"
    );
    let left = runs
        .iter_mut()
        .position(|r| {
            r.child
                .as_mut()
                .unwrap()
                .try_wait()
                .ok()
                .flatten()
                .is_none()
        })
        .expect("one run is left");
    let survivor = &mut runs[left];
    ctl.running_pids(3);
    assert_eq!(ctl.status()["pid"], survivor.pid());
    survivor.signal(15);
    assert_eq!(
        survivor.wait_exit(PATIENCE),
        Some(0),
        "{}",
        survivor.output()
    );
}

/// `flaky` fails until the file `ok` exists; `steady` just runs.
const GIVE_UP_KEEP: &str = r#"
[supervisor]
on_give_up = "keep"

[[worker]]
name = "flaky"
command = ["sh", "-c", "if [ -f ok ]; then exec sleep 1000; else exit 3; fi"]
max_restarts = 1
backoff = { initial = "10ms", jitter = 0.0 }

[[worker]]
name = "steady"
command = ["sleep", "1000"]
"#;

/// Starts [`GIVE_UP_KEEP`] and waits until `flaky` has failed for good.
fn flaky_failed_for_good(ctl: &Ctl) -> Running {
    let run = ctl.start();
    run.wait_for("flaky.0 failed for good", PATIENCE);
    let s = ctl.status();
    let states: Vec<&str> = s["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "running"], "{s:#}");
    run
}

#[test]
fn give_up_keep_exits_1_while_a_replica_is_still_failed() {
    let ctl = Ctl::new(GIVE_UP_KEEP);
    let mut run = flaky_failed_for_good(&ctl);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(1), "{}", run.output());
    let out = run.output();
    assert!(
        out.contains("some had failed for good"),
        "no reason given for exit 1:\n{out}"
    );
}

#[test]
fn give_up_keep_exits_0_once_the_failed_replica_was_revived() {
    let ctl = Ctl::new(GIVE_UP_KEEP);
    let mut run = flaky_failed_for_good(&ctl);
    ctl.sb.write("ok", "");
    ctl.run(&["restart", "flaky"]).assert_code(0);
    ctl.running_pids(2);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}
