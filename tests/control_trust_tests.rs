//! Who may drive a running supervisor (issue 12): not its own workers, over the
//! control socket or with signals; and reloads, whatever asks for them, are paced
//! so that nothing can make agentsup hammer a secret store.

use crate::control_tests::{Ctl, pid, pids_of};
use std::time::{Duration, Instant};

use crate::support::*;

/// `other` runs; `attacker` waits for the file `go`, then drives the supervisor
/// with the real binary (its path, the config and the runtime dir are in its
/// `vars`) and reports each exit status.
fn attacker_config(ctl_runtime: &std::path::Path, dir: &std::path::Path) -> String {
    format!(
        r#"
[[worker]]
name = "other"
command = ["sh", "-c", "echo \"other up $$\"; exec sleep 1000"]

[[worker]]
name = "attacker"
command = ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; \"$BIN\" restart other; echo \"attacker: restart exit $?\"; \"$BIN\" status; echo \"attacker: status exit $?\"; exec sleep 1000"]
vars = {{ BIN = "{bin}", XDG_RUNTIME_DIR = "{rt}", AGENTSUP_CONFIG = "{cfg}" }}
"#,
        bin = bin().display(),
        rt = ctl_runtime.display(),
        cfg = dir.join("supervisor.toml").display(),
    )
}

#[test]
fn a_worker_cannot_restart_another_but_the_operator_can() {
    let ctl = Ctl::new("");
    ctl.sb.config(&attacker_config(&ctl.runtime, ctl.sb.path()));
    let mut run = ctl.start();
    let before = ctl.running_pids(2);
    let other = pid(&before, "other.0");

    ctl.sb.write("go", "");
    let refused = run.wait_for("attacker: restart exit", PATIENCE);
    assert!(refused.ends_with("exit 1"), "{refused}");
    run.wait_for("attacker: status exit 1", PATIENCE);
    let out = run.output();
    assert!(
        out.contains("refused: this client")
            && out.contains("runs under agentsup (worker attacker.0")
            && out.contains("workers may not drive the supervisor"),
        "the worker's client did not say why:\n{out}"
    );
    // agentsup logged it once, naming the worker.
    assert_eq!(
        out.matches("control socket: refused a client").count(),
        1,
        "{out}"
    );
    // `other` was not restarted: same pid, no restart counted.
    let s = ctl.status();
    assert_eq!(pid(&pids_of(&s), "other.0"), other, "{s:#}");
    assert_eq!(s["replicas"][0]["restarts"], 0, "{s:#}");
    assert!(alive(other));

    // The operator's restart (this test process is not below agentsup) works.
    ctl.run(&["restart", "other"])
        .assert_code(0)
        .assert_contains("other.0");
    assert!(
        wait_until(PATIENCE, || {
            let p = pid(&pids_of(&ctl.status()), "other.0");
            p != 0 && p != other
        }),
        "the operator's restart did not happen:\n{}",
        run.output()
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// A vault-style `command` source that appends a line to `runs.txt` each time it
/// runs, and one worker that uses its value.
fn counted_source_config(runs: &std::path::Path) -> String {
    format!(
        r#"
{source}
[[worker]]
name = "w"
command = ["sh", "-c", "echo \"w up $$\"; exec sleep 1000"]
keys = ["MY_TOKEN"]
"#,
        source = counting_command_source(runs)
    )
}

#[test]
fn a_storm_of_reloads_runs_the_secret_command_a_bounded_number_of_times() {
    let ctl = Ctl::new("");
    let runs = ctl.sb.path().join("runs.txt");
    ctl.sb.config(&counted_source_config(&runs));
    let mut run = ctl.start();
    ctl.running_pids(1);
    assert_eq!(count_runs(&runs), 1, "the first load runs it once");
    let started = std::time::Instant::now();

    // 50 operators' `agentsup reload` at once: every one gets its answer, and they
    // share one or two re-reads.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let c = ctl.cmd(&["reload"]);
            std::thread::spawn(move || {
                let sb = Sandbox::new();
                sb.run_cmd(c)
            })
        })
        .collect();
    for c in clients {
        let out = c.join().unwrap();
        out.assert_code(0)
            .assert_contains("sources re-read and checked");
    }
    // At most one start per 3 s, plus the one at the start of the window.
    let bound = |elapsed: f64| 1 + (elapsed / 3.0).ceil() as usize;
    let (burst, elapsed) = (count_runs(&runs) - 1, started.elapsed().as_secs_f64());
    assert!(
        burst >= 1 && burst <= bound(elapsed),
        "50 concurrent reloads in {elapsed:.1} s ran the command {burst} times"
    );

    // A tight loop of 50 more, each on its own connection, not waiting for the
    // answer; then one that waits, which is answered once the queue is done.
    let sock = ctl.socket();
    for _ in 0..50 {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"{\"cmd\":\"reload\"}\n").unwrap();
    }
    ctl.run(&["reload"]).assert_code(0);
    let total = count_runs(&runs) - 1;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        total <= bound(elapsed),
        "101 reloads in {elapsed:.1} s ran the command {total} times"
    );
    eprintln!("101 reloads in {elapsed:.1} s: the command ran {total} times");
    let out = run.output();
    assert!(out.contains("re-read paced"), "{out}");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

#[test]
fn one_supervisor_per_config_with_and_without_xdg_runtime_dir() {
    let ctl = Ctl::new(
        "[[worker]]\nname = \"w\"\ncommand = [\"sh\", \"-c\", \"echo w up; exec sleep 1000\"]\n",
    );
    // With XDG_RUNTIME_DIR first, then without (cron, sudo, docker exec).
    let mut first = ctl.start();
    ctl.running_pids(1);
    let out = ctl.sb.run(&["run", "--no-color"]);
    out.assert_code(78)
        .assert_contains("already supervising")
        .assert_contains(&format!("pid {}", first.pid()));
    assert!(!out.stdout.contains("w up"), "{}", out.all());
    first.signal(15);
    assert_eq!(first.wait_exit(PATIENCE), Some(0), "{}", first.output());

    // Without first, then with.
    let mut first = ctl.sb.spawn(&["run", "--no-color"]);
    first.wait_for("w up", PATIENCE);
    let out = ctl.run(&["run", "--no-color"]);
    out.assert_code(78)
        .assert_contains("already supervising")
        .assert_contains(&format!("pid {}", first.pid()));
    first.signal(15);
    assert_eq!(first.wait_exit(PATIENCE), Some(0), "{}", first.output());
}

/// Serves `socket` as uid 65534 (when `as_nobody`) or as ourselves, answering every
/// request with `answer` (one JSON line); prints `ready` once listening.
const FAKE_SERVER: &str = r#"
import os, socket, sys, json
path, as_nobody = sys.argv[1], sys.argv[2] == "1"
if as_nobody:
    os.setgid(65534)
    os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    req = json.loads(c.makefile().readline())
    msg = "\x1b]0;pwned\x07\x1b[2J\ragentsup | warning: forged " + req["cmd"]
    status = None
    if req["cmd"] == "status":
        status = {"config": "/srv/\x1b[31mred.toml", "pid": 1, "uptime_secs": 1.0,
                  "replicas": [{"worker": "evil\x1b]0;t\x07", "replica": 0, "pid": None,
                                "state": "running", "uptime_secs": None, "restarts": 0,
                                "last_exit": "\x9b2J"}],
                  "counters": {"restarts": {}, "auth_failures": {}, "secret_reloads": 0,
                               "secret_reload_failures": 0},
                  "shutting_down": False}
    ok = req["cmd"] != "reload"
    c.sendall((json.dumps({"ok": ok, "message": msg, "status": status}) + "\n").encode())
    c.close()
"#;

/// Kills and reaps the fake server however the test ends.
struct FakeServer(std::process::Child);

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fake_server(socket: &std::path::Path, as_nobody: bool) -> FakeServer {
    use std::io::BufRead;
    let mut child = std::process::Command::new(python())
        .args(["-c", FAKE_SERVER])
        .arg(socket)
        .arg(if as_nobody { "1" } else { "0" })
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the fake server did not start");
    FakeServer(child)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn a_config_in_a_shared_directory_keeps_its_socket_private_and_ignores_a_planted_one() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.config(
        "[[worker]]\nname = \"w\"\ncommand = [\"sh\", \"-c\", \"echo w up; exec sleep 1000\"]\n",
    );
    // Like /tmp: anyone may create files here.
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let beside = sb.path().join(".supervisor.agentsup.sock");
    // Another user's socket where agentsup used to put its own (root only can
    // play the other user here).
    let planted = is_root().then(|| fake_server(&beside, true));

    let mut run = sb.spawn(&["run", "--no-color"]);
    let line = run.wait_for("control socket: ", PATIENCE);
    run.wait_for("w up", PATIENCE);
    let sock = line
        .rsplit("control socket: ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    assert!(
        !sock.starts_with(&sb.path().display().to_string()),
        "socket in a directory others can write: {sock}"
    );
    let dir = std::path::Path::new(&sock).parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    // The operator's clients talk to the real supervisor, never to the planted one.
    let out = sb.run(&["status"]);
    out.assert_code(0)
        .assert_contains(&format!("agentsup pid {}", run.pid()));
    assert!(
        !out.all().contains("forged") && !out.all().contains("evil"),
        "{}",
        out.all()
    );
    sb.run(&["restart", "w"])
        .assert_code(0)
        .assert_contains("restarting w.0");
    drop(planted);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

#[test]
fn a_planted_socket_alone_is_named_and_never_talked_to() {
    if !is_root() {
        eprintln!("skipped: needs root to play another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\n");
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let beside = sb.path().join(".supervisor.agentsup.sock");
    let planted = fake_server(&beside, true);
    let out = sb.run(&["status"]);
    out.assert_code(1)
        .assert_contains("no agentsup run is serving")
        .assert_contains("ignored (not yours, never talked to)")
        .assert_contains("belongs to uid 65534");
    assert!(!out.all().contains("forged"), "{}", out.all());
    drop(planted);
}

#[test]
fn what_a_server_of_ours_sends_is_printed_escaped() {
    let ctl = Ctl::new("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\n");
    // Where a supervisor would listen: the client names it when none does.
    let out = ctl.run(&["status"]);
    let msg = out.stderr.clone();
    let at = msg.split("there is no control socket at ").nth(1).unwrap();
    let sock = std::path::PathBuf::from(at.lines().next().unwrap().trim());
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let server = fake_server(&sock, false);
    for (args, code) in [
        (&["status"][..], 0),
        (&["status", "--format", "json"], 0),
        (&["restart", "w"], 0),
        (&["reload"], 1),
    ] {
        let out = ctl.run(args);
        out.assert_code(code);
        let all = out.all();
        for raw in ['\u{1b}', '\u{7}', '\r', '\u{9b}'] {
            assert!(!all.contains(raw), "{args:?} printed {raw:?} raw:\n{all:?}");
        }
        assert!(all.contains("\\x1b"), "{args:?}: {all:?}");
        assert!(
            !all.lines()
                .any(|l| l.starts_with("agentsup | warning: forged")),
            "{args:?}: a forged line:\n{all}"
        );
    }
    drop(server);
}

#[test]
fn idle_connections_cannot_lock_the_operator_out() {
    use std::io::Read;
    let ctl = Ctl::new(
        "[[worker]]\nname = \"w\"\ncommand = [\"sh\", \"-c\", \"echo w up; exec sleep 1000\"]\n",
    );
    let mut run = ctl.start();
    ctl.running_pids(1);
    let sock = ctl.socket();
    // More silent connections than the supervisor serves at once.
    let idle: Vec<std::os::unix::net::UnixStream> = (0..40)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
        .collect();
    let t = Instant::now();
    ctl.run(&["status"]).assert_code(0).assert_contains("w");
    let took = t.elapsed();
    eprintln!("status with 40 idle connections open: {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "status took {took:?} with 40 idle connections (they are closed after 5 s of silence anyway)"
    );
    // A silent connection is closed before long (5 s before the first request).
    let mut last = &idle[39];
    last.set_read_timeout(Some(PATIENCE)).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert!(
        matches!(last.read(&mut buf), Ok(0) | Err(_)),
        "a silent connection got an answer"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// The uid whose `agentsup run` another user tries to stop: used by no other test,
/// so squatting its `/tmp/agentsup-<uid>` disturbs nobody else.
const VICTIM: u32 = 64_123;

/// `/tmp/agentsup-<VICTIM>`, removed before and after the test however it ends.
struct Squatted(std::path::PathBuf);

impl Squatted {
    /// Made by uid 65534, `0777`, as `mkdir -m777 /tmp/agentsup-<VICTIM>` would.
    fn plant() -> Squatted {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::path::PathBuf::from(format!("/tmp/agentsup-{VICTIM}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        Squatted(dir)
    }
}

impl Drop for Squatted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `agentsup ARGS` as [`VICTIM`], with or without an `XDG_RUNTIME_DIR`.
fn as_victim(
    sb: &Sandbox,
    runtime: Option<&std::path::Path>,
    args: &[&str],
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut c = sb.cmd(args);
    c.uid(VICTIM).gid(VICTIM);
    if let Some(rt) = runtime {
        c.env("XDG_RUNTIME_DIR", rt);
    }
    c
}

#[test]
fn another_users_tmp_dir_neither_stops_a_run_nor_splits_its_lock() {
    if !is_root() {
        eprintln!("skipped: needs root to play two other users");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.config(
        "[[worker]]\nname = \"w\"\ncommand = [\"sh\", \"-c\", \"echo w up; exec sleep 1000\"]\n",
    );
    let runtime = sb.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    for p in [sb.path(), &runtime, &sb.path().join("supervisor.toml")] {
        std::os::unix::fs::chown(p, Some(VICTIM), Some(VICTIM)).unwrap();
    }
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let squat = Squatted::plant();
    let beside_lock = sb.path().join(".supervisor.agentsup.lock");

    // With XDG_RUNTIME_DIR (the red team's case): it starts, and says why it did
    // not use /tmp/agentsup-<uid>.
    let mut first = sb.spawn_cmd(as_victim(&sb, Some(&runtime), &["run", "--no-color"]));
    first.wait_for("w up", PATIENCE);
    let out = first.output();
    assert!(
        out.contains(&format!(
            "{} belongs to uid 65534, not to us (uid {VICTIM}): another user may be squatting it",
            squat.0.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "control socket: {}",
            runtime.join("agentsup").display()
        )),
        "{out}"
    );
    assert!(beside_lock.exists(), "no fallback lock beside the config");
    // A run of the same config without XDG_RUNTIME_DIR (cron, sudo) meets it there.
    let out = sb.run_cmd(as_victim(&sb, None, &["run", "--no-color"]));
    out.assert_code(78)
        .assert_contains("already supervising")
        .assert_contains(&format!("pid {}", first.pid()));
    assert!(!out.stdout.contains("w up"), "{}", out.all());
    first.signal(15);
    assert_eq!(first.wait_exit(PATIENCE), Some(0), "{}", first.output());
    assert!(!beside_lock.exists(), "lock file left after a clean exit");

    // Without XDG_RUNTIME_DIR first, then with.
    let mut first = sb.spawn_cmd(as_victim(&sb, None, &["run", "--no-color"]));
    first.wait_for("w up", PATIENCE);
    assert!(
        first.output().contains("another user may be squatting it"),
        "{}",
        first.output()
    );
    let out = sb.run_cmd(as_victim(&sb, Some(&runtime), &["run", "--no-color"]));
    out.assert_code(78)
        .assert_contains("already supervising")
        .assert_contains(&format!("pid {}", first.pid()));
    first.signal(15);
    assert_eq!(first.wait_exit(PATIENCE), Some(0), "{}", first.output());
    // Nothing of ours went into the other user's directory.
    let planted: Vec<_> = std::fs::read_dir(&squat.0).unwrap().collect();
    assert!(planted.is_empty(), "{planted:?}");

    // No private place at all (a shared config directory, no XDG_RUNTIME_DIR):
    // refused with what was found and what to do, not "already running".
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = sb.run_cmd(as_victim(&sb, None, &["run", "--no-color"]));
    out.assert_code(78)
        .assert_contains("no usable place for the single-run lock")
        .assert_contains(&format!("{} belongs to uid 65534", squat.0.display()))
        .assert_contains("hint: set XDG_RUNTIME_DIR");
}
