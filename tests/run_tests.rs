//! `agentsup run` with real workers: environment, checks before start, auth
//! classification and rotation, backoff, give-up, stopping, PDEATHSIG, PID 1, and
//! output that loses nothing and leaks nothing.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

#[test]
fn worker_gets_exactly_its_environment() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-");
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", key.value()));
    sb.write(".env", "MODEL=gpt-4o-mini\nUNDECLARED_IN_DOTENV=nope\n");
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH"]
vars = {{ LOG_LEVEL = "info" }}

[[source]]
type = "dotenv"
path = ".env"

[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "dump"
command = ["{}", "{}", "envdump.json"]
keys = ["OPENAI_API_KEY", "MODEL"]
restart = "never"
"#,
        python(),
        fixture("print_env.py")
    ));
    let out = sb.run_env(
        &["run", "--no-color"],
        &[
            ("UNDECLARED_IN_PROCESS", "nope"),
            ("AWS_SECRET_ACCESS_KEY", "nope-nope"),
        ],
    );
    out.assert_code(0)
        .assert_no_leak(&key)
        .assert_contains("env dumped");
    key.assert_not_in_sandbox(&sb, &["envdump.json"]);
    let dumped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path().join("envdump.json")).unwrap())
            .unwrap();
    let obj = dumped.as_object().unwrap();
    let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
    names.sort();
    // python3 itself may add nothing to os.environ; LC_CTYPE coercion only happens
    // when LC_ALL/LC_CTYPE/LANG are unset and the locale is "C" — it would show up here.
    names.retain(|n| *n != "LC_CTYPE");
    // (`python()` is the real interpreter: a pyenv shim on PATH would add its own
    // PYENV_* variables, which is the shim's doing, not agentsup's.)
    assert_eq!(
        names,
        vec![
            "AGENTSUP_REPLICA",
            "AGENTSUP_REPLICAS",
            "AGENTSUP_WORKER",
            "LOG_LEVEL",
            "MODEL",
            "OPENAI_API_KEY",
            "PATH",
            "PYTHONUNBUFFERED",
            "PYTHON_DOTENV_DISABLED",
        ]
    );
    assert_eq!(obj["OPENAI_API_KEY"], key.value());
    assert_eq!(obj["AGENTSUP_WORKER"], "dump");
}

#[test]
fn missing_key_exits_78_and_starts_nothing() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "w"
command = ["sh", "-c", "touch started"]
keys = ["OPENAI_API_KEY"]
"#,
    );
    let out = sb.run(&["run"]);
    out.assert_code(78)
        .assert_contains("OPENAI_API_KEY")
        .assert_contains("nothing was started");
    assert!(!sb.path().join("started").exists(), "a worker was started");
}

fn auth_sandbox(keys: &RotationKeys, extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.old.value()));
    sb.write("good_key", format!("{}\n", keys.new.value()));
    sb.config(&format!(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "planner"
command = ["python3", "{}"]
keys = ["OPENAI_API_KEY"]
vars = {{ GOOD_KEY_FILE = "{}" }}
backoff = {{ initial = "200ms", max = "2s", multiplier = 2.0, jitter = 0.0 }}
{extra}
"#,
        fixture("openai_auth.py"),
        sb.path().join("good_key").display()
    ));
    sb
}

#[test]
fn auth_failure_is_classified_and_rotation_recovers() {
    let keys = RotationKeys::new();
    let sb = auth_sandbox(&keys, "auth = { max_delay = \"1s\" }");
    assert_auth_failure_then_rotation_recovers(&sb, &keys);
}

#[test]
fn unchanged_key_backs_off_then_backs_off_then_is_auth_blocked_with_exact_delays() {
    // backoff 200 ms × 2 (jitter 0), auth.max_delay 2 s: the re-reads after each
    // auth failure find nothing new and hold the replica 200 ms, 400 ms, then
    // (the third in a row) 800 ms in auth-blocked, then 1.6 s, then 2 s (the cap).
    let keys = RotationKeys::new();
    let sb = auth_sandbox(&keys, "auth = { max_delay = \"2s\" }");
    let mut run = sb.spawn(&["run", "--log-format", "json"]);
    let holds = |out: &str| -> Vec<(String, u64)> {
        json_lines(out)
            .iter()
            .filter(|v| {
                v["event"] == "transition"
                    && v["replica"] == 0
                    && (v["to"] == "backoff" || v["to"] == "auth-blocked")
                    && v["delay_ms"].is_u64()
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("auth failure"))
            })
            .map(|v| {
                (
                    v["to"].as_str().unwrap().to_string(),
                    v["delay_ms"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert!(
        run.wait_output(Duration::from_secs(60), |out, closed| closed
            || holds(out).len() >= 5),
        "five auth holds did not come:\n{}",
        run.output()
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let got = holds(&run.output());
    let want: Vec<(String, u64)> = [
        ("backoff", 200),
        ("backoff", 400),
        ("auth-blocked", 800),
        ("auth-blocked", 1600),
        ("auth-blocked", 2000),
    ]
    .iter()
    .map(|(s, d)| (s.to_string(), *d))
    .collect();
    assert_eq!(got[..5], want[..], "{}", run.output());
    keys.assert_absent(&run);
}

#[test]
fn crashing_worker_gives_up_after_max_restarts() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "crash"
command = ["sh", "-c", "echo run >> runs.txt; exit 3"]
max_restarts = 3
backoff = { initial = "50ms", max = "200ms" }
"#,
    );
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(1).assert_contains("failed");
    let runs = std::fs::read_to_string(sb.path().join("runs.txt")).unwrap();
    assert_eq!(runs.lines().count(), 3, "{}", out.all());
}

#[test]
fn stubborn_worker_and_grandchild_are_killed_after_stop_timeout() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "stubborn"
command = ["sh", "-c", "trap '' TERM; sleep 1000 & echo \"pids $$ $!\"; while :; do sleep 1; done"]
stop_timeout = "1s"
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    let line = run.wait_for("pids ", PATIENCE);
    let pids: Vec<i32> = line
        .split("pids ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    for p in pids {
        assert!(
            wait_until(PATIENCE, || !alive(p)),
            "pid {p} survived agentsup"
        );
    }
}

#[test]
fn sigkilled_agentsup_leaves_no_worker_alive() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "sleeper"
command = ["sh", "-c", "echo \"pid $$\"; exec sleep 1000"]
replicas = 3
"#,
    );
    let run = sb.spawn(&["run", "--no-color"]);
    let pids = run.announced_pids(3, "| pid ");
    signal(run.pid(), 9);
    assert_all_die(&pids, "worker", "a SIGKILLed agentsup");
}

/// Not only the worker's own process: what it started in its process group dies
/// too (agentsup's guard kills the groups), and the guard itself then exits.
#[test]
fn sigkilled_agentsup_leaves_no_grandchild_alive() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "wrapper"
command = ["sh", "-c", "sleep 1000 & echo \"child $!\"; wait"]
replicas = 2
"#,
    );
    let run = sb.spawn(&["run", "--no-color"]);
    // The worker's own pid is its child's process group (each worker leads one).
    let pids: Vec<i32> = run
        .announced_pids(2, "| child ")
        .into_iter()
        .flat_map(|child| {
            let group = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
            let pgid: i32 = group
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .nth(2)
                .unwrap()
                .parse()
                .unwrap();
            [child, pgid]
        })
        .collect();
    let guard = guard_of(run.pid());
    signal(run.pid(), 9);
    assert_all_die(&pids, "worker or its child", "a SIGKILLed agentsup");
    assert_all_die(&[guard], "the guard", "the groups it had to kill");
}

/// The guard holds no descriptor of agentsup's but its pipe: a descriptor agentsup
/// inherited (a shell's `7< file`, a socket) or the pipe of whoever reads
/// agentsup's output must not be kept open by it.
#[test]
fn the_guard_holds_only_its_own_pipe() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    let config = sb.config(
        r#"
[[worker]]
name = "w"
command = ["sleep", "1000"]
"#,
    );
    let extra = std::fs::File::open(&config).unwrap();
    let fd = extra.as_raw_fd();
    let mut cmd = sb.cmd(&["run", "--no-color"]);
    // SAFETY: dup2 in the child before exec; it clears close-on-exec on fd 7.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = sb.spawn_cmd(cmd);
    run.wait_for("running (pid", PATIENCE);
    let guard = guard_of(run.pid());
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{guard}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "the guard's descriptors");
    let stdin = std::fs::read_link(format!("/proc/{guard}/fd/0")).unwrap();
    assert!(
        stdin.to_string_lossy().starts_with("pipe:"),
        "the guard reads a pipe, not {stdin:?}"
    );
    assert!(
        Path::new(&format!("/proc/{}/fd/7", run.pid())).exists(),
        "agentsup was meant to inherit fd 7"
    );
}

/// The pid of the guard (named `agentsup-guard`) among `parent`'s children.
fn guard_of(parent: i32) -> i32 {
    let mut found = None;
    let ok = wait_until(PATIENCE, || {
        found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (ppid == parent && comm.trim_end() == "agentsup-guard").then_some(pid)
        });
        found.is_some()
    });
    assert!(ok, "agentsup (pid {parent}) started no guard");
    found.unwrap()
}

#[test]
fn as_pid1_in_a_pid_namespace_it_reaps_orphaned_zombies() {
    // A PID namespace needs root, or an unprivileged user namespace to be root in.
    let Some(unshare) = pid_namespace_unshare() else {
        eprintln!(
            "skipped: unshare(1) cannot create a PID namespace here (not root, and no \
             unprivileged user namespaces)"
        );
        return;
    };
    let sb = Sandbox::new();
    sb.script(
        "orphans.sh",
        r#"#!/bin/sh
# Make an orphan: its parent (the inner sh) exits at once, so it is reparented to
# PID 1 (agentsup), which must reap it. It waits until that parent is gone, then
# writes a marker and exits (as an orphan, so only PID 1 can reap it).
sh -c 'p=$$; (i=0; while [ -d /proc/$p ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; touch orphan_done) & echo $! > orphan.pid'
orphan=$(cat orphan.pid)
# Polls (at most 30 s each) while orphan_done is missing / while the orphan's
# /proc entry exists (a zombie keeps it until PID 1 reaps it).
i=0
while [ ! -e orphan_done ]; do
  if [ $i -ge 300 ]; then echo "the orphan never finished"; exit 4; fi
  sleep 0.1; i=$((i+1))
done
i=0
while [ -e /proc/$orphan ]; do
  if [ $i -ge 300 ]; then echo "zombie remains: orphan $orphan was never reaped"; exit 3; fi
  sleep 0.1; i=$((i+1))
done
i=0
while [ $i -lt 300 ]; do
  z=$(grep -l '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat 2>/dev/null | wc -l)
  if [ "$z" -eq 0 ]; then echo "no zombies (orphan $orphan reaped)"; exit 0; fi
  sleep 0.1; i=$((i+1))
done
echo "zombie remains"; exit 3
"#,
    );
    sb.config(
        r#"
[[worker]]
name = "maker"
command = ["./orphans.sh"]
restart = "never"
"#,
    );
    let mut c = std::process::Command::new("unshare");
    c.args(&unshare)
        .arg(bin())
        .args(["run", "--no-color"])
        .current_dir(sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let out = sb.run_cmd(c);
    out.assert_code(0).assert_contains("no zombies");
    // A worker that fails for good makes PID 1 exit 1.
    sb.config(
        r#"
[[worker]]
name = "fails"
command = ["sh", "-c", "exit 5"]
restart = "never"
"#,
    );
    let mut c = std::process::Command::new("unshare");
    c.args(&unshare)
        .arg(bin())
        .args(["run", "--no-color"])
        .current_dir(sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    sb.run_cmd(c).assert_code(1);
}

/// The `unshare` arguments that give a command a PID namespace (with a user
/// namespace when not root), or `None` when neither works here.
fn pid_namespace_unshare() -> Option<Vec<&'static str>> {
    let plain = vec!["--pid", "--fork", "--mount-proc", "--kill-child"];
    let mut mapped = vec!["--map-root-user"];
    mapped.extend(&plain);
    [plain, mapped].into_iter().find(|args| {
        std::process::Command::new("unshare")
            .args(args)
            .arg("true")
            .stdin(std::process::Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn four_floods_arrive_complete_and_in_order() {
    const N: usize = 250_000;
    let sb = Sandbox::new();
    let mut cfg = String::new();
    for i in 0..4 {
        cfg.push_str(&format!(
            "[[worker]]\nname = \"w{i}\"\ncommand = [\"python3\", \"{}\", \"{N}\"]\nrestart = \"never\"\n\n",
            fixture("flood.py")
        ));
    }
    sb.config(&cfg);
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(0);
    let mut next = [0usize; 4];
    for line in out.stdout.lines() {
        let Some((label, text)) = line.split_once(" | ") else {
            continue;
        };
        let label = label.trim();
        if label == "agentsup" {
            continue;
        }
        let w: usize = label[1..label.find('.').unwrap()].parse().unwrap();
        let mut parts = text.split(' ');
        assert_eq!(
            parts.next(),
            Some(format!("w{w}").as_str()),
            "corrupt line {line:?}"
        );
        let n: usize = parts
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("corrupt line {line:?}"));
        assert_eq!(n, next[w], "worker w{w}: expected line {} got {n}", next[w]);
        assert_eq!(
            parts.next().map(str::len),
            Some(80),
            "corrupt line {line:?}"
        );
        next[w] += 1;
    }
    assert_eq!(next, [N; 4]);
}

#[test]
fn secrets_are_redacted_whole_split_and_encoded() {
    let token = Canary::new("tok_");
    let sb = Sandbox::new();
    sb.write("secrets/SERVICE_TOKEN", token.value());
    sb.config(&format!(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "talker"
command = ["python3", "{}"]
keys = ["SERVICE_TOKEN"]
restart = "never"
"#,
        fixture("split_secret.py")
    ));
    for format in ["pretty", "json"] {
        let out = sb.run(&["run", "--no-color", "--log-format", format]);
        out.assert_code(0).assert_no_leak(&token);
        let text = out.all();
        assert!(
            text.matches("[redacted:SERVICE_TOKEN]").count() >= 5,
            "{text}"
        );
    }
}

#[test]
fn unknown_command_is_a_config_error_naming_worker_and_path() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[env]
inherit = []
vars = { PATH = "/nonexistent/bin" }

[[worker]]
name = "ghost"
command = ["definitely-not-installed-xyz", "--flag"]
"#,
    );
    sb.run(&["run"])
        .assert_code(78)
        .assert_contains("worker \"ghost\"")
        .assert_contains("definitely-not-installed-xyz")
        .assert_contains("/nonexistent/bin");
}

#[test]
fn only_starts_the_named_workers() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "a"
command = ["sh", "-c", "touch a-ran"]
restart = "never"

[[worker]]
name = "b"
command = ["sh", "-c", "touch b-ran"]
restart = "never"
"#,
    );
    sb.run(&["run", "--only", "b"]).assert_code(0);
    assert!(sb.path().join("b-ran").exists());
    assert!(!sb.path().join("a-ran").exists());
    sb.run(&["run", "--only", "c"])
        .assert_code(2)
        .assert_contains("unknown worker \"c\"");
}

#[test]
fn sighup_restarts_only_changed_replicas_and_refuses_bad_values() {
    let sb = Sandbox::new();
    let (first, second) = (Canary::new("tok-"), Canary::new("tok-"));
    let tokens = |a: &str| format!("A_TOKEN={a}\nB_TOKEN=unchanged-value\n");
    sb.write("tokens.env", tokens(&format!("'{}'", first.value())));
    // A `command` source is never watched: whatever is re-read below, only the
    // SIGHUP can have asked for it (a watched `.env` would be re-read by the
    // watcher on its own and print the same refusal).
    sb.config(
        r#"
[[source]]
type = "command"
command = ["cat", "tokens.env"]

[[worker]]
name = "alpha"
command = ["sh", "-c", "echo \"alpha up $$\"; exec sleep 1000"]
keys = ["A_TOKEN"]

[[worker]]
name = "beta"
command = ["sh", "-c", "echo \"beta up $$\"; exec sleep 1000"]
keys = ["B_TOKEN"]
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for_all(&["alpha up", "beta up"], PATIENCE);
    // A bad value (a placeholder) is refused and nothing restarts.
    sb.write("tokens.env", tokens("changeme"));
    run.signal(1);
    run.wait_for("fail the checks", PATIENCE);
    // A good value restarts only alpha.
    sb.write("tokens.env", tokens(&format!("'{}'", second.value())));
    run.signal(1);
    run.wait_for("restarting 1 replica", PATIENCE);
    run.wait_for("alpha up", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    let out = run.output();
    assert_eq!(out.matches("alpha up").count(), 2, "{out}");
    assert_eq!(out.matches("beta up").count(), 1, "{out}");
    assert_eq!(out.matches("received SIGHUP").count(), 2, "{out}");
    first.assert_absent(&run);
    second.assert_absent(&run);
}

#[test]
fn shutdown_timeout_caps_every_stop_timeout() {
    let sb = Sandbox::new();
    // Twenty replicas that ignore SIGTERM and would get 300 s each to stop; the
    // whole shutdown must still end at shutdown_timeout (2 s), not after 300 s.
    sb.config(
        r#"
[supervisor]
shutdown_timeout = "2s"

[[worker]]
name = "deaf"
command = ["sh", "-c", "trap '' TERM; echo \"deaf up\"; while :; do sleep 1; done"]
replicas = 20
stop_timeout = "300s"
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    for _ in 0..20 {
        run.wait_for("deaf up", PATIENCE);
    }
    let started = std::time::Instant::now();
    run.signal(15);
    let child = run.child.as_mut().unwrap();
    let mut status = None;
    wait_until(PATIENCE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let took = started.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", run.output());
    // The deaf replicas are killed at 90 % of the 2 s (1.8 s): the shutdown cannot
    // end before that, and must end soon after it, not at a stop_timeout (300 s).
    // The upper bound leaves 3 s for a loaded machine to kill and reap 20
    // processes; measured ~1.9 s idle.
    eprintln!("shutdown of 20 deaf replicas with shutdown_timeout 2s: {took:?}");
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_secs(5),
        "shutdown took {took:?} for shutdown_timeout = 2s\n{}",
        run.output()
    );
    assert!(run.drain(PATIENCE));
    assert!(
        run.output().contains("killing what is left"),
        "{}",
        run.output()
    );
}

/// The Rust runtime ignores SIGPIPE in agentsup; a worker must get the default
/// back (as from a shell), or pipelines like `yes | head -1` print errors.
#[test]
fn workers_start_with_sigpipe_at_its_default() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "w"
command = ["sh", "-c", "grep SigIgn /proc/self/status; yes | head -c 1 >/dev/null; echo pipeline done"]
restart = "never"
"#,
    );
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(0).assert_contains("pipeline done");
    let mask = out
        .stdout
        .lines()
        .find_map(|l| l.split("SigIgn:").nth(1))
        .unwrap_or_else(|| panic!("no SigIgn line:\n{}", out.all()));
    let ignored = u64::from_str_radix(mask.trim(), 16).unwrap();
    assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "{}", out.all());
    assert!(!out.all().contains("Broken pipe"), "{}", out.all());
}
