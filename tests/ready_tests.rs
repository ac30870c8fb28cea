//! Per-worker readiness (issue 14), with the real binary and real workers:
//! `ready = { notify | log | exec | http }`, rolling restarts that wait for the
//! restarted replica to be ready, `/readyz` and `agentsup status` that say so.

use crate::control_tests::Ctl;
use crate::support::*;

/// A worker that takes a moment, then tells `$NOTIFY_SOCKET` it is ready
/// (systemd's protocol, as `sd_notify(3)` sends it).
const NOTIFY_WORKER: &str = r#"
import os, socket, time
print("booting token=%d" % len(os.environ["MY_TOKEN"]), flush=True)
time.sleep(1.0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warm\nREADY=1", os.environ["NOTIFY_SOCKET"])
print("sent ready", flush=True)
while True:
    time.sleep(1)
"#;

#[test]
fn a_rolling_restart_moves_on_only_when_the_restarted_replica_is_ready() {
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    sb.write("secrets/MY_TOKEN", "first-token-00001");
    sb.write("worker.py", NOTIFY_WORKER);
    sb.config(&format!(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "n"
replicas = 2
command = ["{py}", "worker.py"]
keys = ["MY_TOKEN"]
ready = {{ notify = true }}
"#,
        py = python()
    ));
    let mut run = ctl.start();
    run.wait_for_all(&["n.0: ready", "n.1: ready"], PATIENCE);
    let status = ctl.status();
    for r in status["replicas"].as_array().unwrap() {
        assert_eq!(r["ready"], true, "{status}");
    }
    write_atomically(&sb.path().join("secrets/MY_TOKEN"), "second-token-000002");
    run.wait_for("restarting 2 replica(s)", PATIENCE);
    // Both restarted, each announced ready; never both down at once: the second
    // stop comes after the first restarted replica said it was ready.
    let ok = wait_until(PATIENCE, || {
        run.output().matches("booting token=19").count() == 2
    });
    assert!(ok, "{}", run.output());
    run.wait_for_match(
        |l| l.contains(": ready") && l.contains("after it started"),
        PATIENCE,
    )
    .expect("a restarted replica became ready");
    let out = run.output();
    let lines: Vec<&str> = out.lines().collect();
    let pos = |pred: &dyn Fn(&str) -> bool, from: usize| {
        lines[from..].iter().position(|l| pred(l)).map(|i| i + from)
    };
    let restart = pos(&|l| l.contains("restarting 2 replica(s)"), 0).unwrap();
    let first_stop = pos(&|l| l.contains("running -> stopping"), restart).unwrap();
    let first_ready = pos(
        &|l| l.contains(": ready") && l.contains("after it started"),
        first_stop,
    );
    let second_stop = pos(&|l| l.contains("running -> stopping"), first_stop + 1);
    let (Some(first_ready), Some(second_stop)) = (first_ready, second_stop) else {
        panic!("{out}");
    };
    assert!(
        first_ready < second_stop,
        "the second replica was stopped before the first was ready:\n{out}"
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

#[test]
fn log_and_exec_probes_gate_readiness_and_status_shows_it() {
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    let (mut run, port) = spawn_with_health_port(|port| {
        sb.config(&format!(
            r#"
[supervisor]
health = "127.0.0.1:{port}"

[[worker]]
name = "logger"
command = ["sh", "-c", "echo warming; while [ ! -e go ]; do sleep 0.05; done; echo 'server listening on :8000'; exec sleep 300"]
ready = {{ log = 'listening on :\d+' }}

[[worker]]
name = "execd"
command = ["sh", "-c", "exec sleep 300"]
ready = {{ exec = ["test", "-e", "flag-{{replica}}"], interval = "200ms" }}
"#
        ));
        ctl.start()
    });
    run.wait_for("warming", PATIENCE);
    let pids = ctl.running_pids(2);
    assert_eq!(pids.len(), 2);
    let readyz = || get(port, "/readyz").map(|r| (r.code, r.body));
    let (code, body) = readyz().expect("/readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("logger has no ready replica yet"), "{body}");
    assert!(body.contains("execd has no ready replica yet"), "{body}");
    let status = ctl.status();
    assert_eq!(status["replicas"][0]["ready"], false, "{status}");
    sb.write("go", "");
    run.wait_for("logger.0: ready", PATIENCE);
    sb.write("flag-0", "");
    run.wait_for("execd.0: ready", PATIENCE);
    let ok = wait_until(PATIENCE, || readyz().is_some_and(|(c, _)| c == 200));
    assert!(ok, "{:?}", readyz());
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

#[test]
fn an_http_probe_waits_for_a_2xx_and_a_timeout_is_reported() {
    let sb = Sandbox::new();
    let port = free_port();
    // Serves 200 on /ready only after `up` exists; 503 before.
    sb.write(
        "server.py",
        r#"
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200 if os.path.exists("up") else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()
print("serving", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
    );
    sb.config(&format!(
        r#"
[[worker]]
name = "web"
command = ["{py}", "server.py", "{port}"]
ready = {{ http = "http://127.0.0.1:{port}/ready", interval = "200ms", timeout = "2s" }}
"#,
        py = python()
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("serving", PATIENCE);
    let line = run.wait_for("web.0: not ready 2s after it started", PATIENCE);
    assert!(
        line.contains(&format!("http http://127.0.0.1:{port}/ready")),
        "{line}"
    );
    // Then why: the server answers 503 (or, on a slow start, was not listening yet).
    let why = run.wait_for("web.0: its latest probe: ", PATIENCE);
    assert!(
        why.contains("it answered HTTP 503") || why.to_lowercase().contains("connection refused"),
        "{why}"
    );
    sb.write("up", "");
    run.wait_for("web.0: ready", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

#[test]
fn check_names_ready_mistakes() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\nready = { http = \"http://x/\", log = \"y\" }\n");
    let out = sb.run(&["check"]);
    out.assert_code(78);
    out.assert_contains("`ready` takes exactly one of `http`, `exec`, `log`, `notify` (found 2)");
    sb.config(
        "[[worker]]\nname = \"a\"\ncommand = [\"true\"]\nready = { http = \"https://x/\" }\n",
    );
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("must start with http://");
    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\nready = { notfy = true }\n");
    sb.run(&["check"])
        .assert_code(78)
        .assert_contains("did you mean `notify`");
}

/// An `exec` probe runs as the worker's `user`, with that account's HOME: it runs
/// in the worker's directory, whose files the worker can write, so as agentsup's
/// own user (root) it would let the worker run code as root.
#[test]
fn an_exec_probe_runs_as_the_workers_user() {
    if !crate::contain_tests::is_root() {
        eprintln!("skipped: switching a worker's user needs agentsup to run as root");
        return;
    }
    let sb = Sandbox::new();
    crate::contain_tests::open_up(&sb);
    sb.config(
        r#"
[env]
inherit = ["PATH", "HOME", "USER"]

[[worker]]
name = "w"
user = "nobody"
command = ["sh", "-c", "echo up; exec sleep 300"]
ready = { exec = ["sh", "-c", "echo \"probe uid $(id -u) home $HOME\" >&2; test \"$(id -u)\" = 65534 && test \"$HOME\" != /root"], interval = "200ms", timeout = "20s" }
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("| up", PATIENCE);
    run.wait_for("w.0: ready", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// Replica 1 reports itself ready, then, from a child that first joins replica
/// 0's process group (`setpgid`: the workers share agentsup's session), sends
/// `READY=1` to every other notify socket it can find, then again from itself.
/// Replica 0 reports only once `go` exists, and through a child process (as
/// `systemd-notify` run from a script would).
const FORGING_WORKER: &str = r#"
import os, socket, subprocess, sys, time
me = os.environ["NOTIFY_SOCKET"]
if os.environ["AGENTSUP_REPLICA"] == "1":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", me)
    d = os.path.dirname(me)
    deadline = time.time() + 60
    others = []
    while (not others or not os.path.exists("pid0")) and time.time() < deadline:
        others = [os.path.join(d, n) for n in os.listdir(d) if os.path.join(d, n) != me]
        time.sleep(0.05)
    victim = int(open("pid0").read())
    forge = ("import os, socket, sys; os.setpgid(0, %d); "
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
             "[s.sendto(b'READY=1', p) for p in sys.argv[1:]]; "
             "print('forged ready from group', os.getpgid(0), flush=True)" % victim)
    subprocess.run([sys.executable, "-c", forge] + others)
    for p in others:
        s.sendto(b"READY=1", p)
    print("forged ready for", len(others), flush=True)
else:
    with open("pid0.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename("pid0.tmp", "pid0")
    while not os.path.exists("go"):
        time.sleep(0.05)
    send = "import os, socket, time; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(1)"
    subprocess.run([sys.executable, "-c", send])
while True:
    time.sleep(1)
"#;

#[test]
fn a_sibling_cannot_report_another_replica_ready_but_its_own_child_can() {
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    sb.write("worker.py", FORGING_WORKER);
    sb.config(&format!(
        r#"
[[worker]]
name = "n"
replicas = 2
command = ["{py}", "worker.py"]
ready = {{ notify = true }}
"#,
        py = python()
    ));
    let mut run = ctl.start();
    run.wait_for_all(
        &[
            "n.1: ready",
            "forged ready for",
            "n.0: ignored READY=1 from pid",
        ],
        PATIENCE,
    );
    let status = ctl.status();
    assert_eq!(status["replicas"][0]["ready"], false, "{status}");
    assert_eq!(status["replicas"][1]["ready"], true, "{status}");
    assert!(!run.output().contains("n.0: ready"), "{}", run.output());
    sb.write("go", "");
    run.wait_for("n.0: ready", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

/// The notify sockets' directory does not outlive a SIGKILLed agentsup: its
/// guard removes it, as it removes key files.
#[test]
fn a_sigkilled_run_leaves_no_notify_directory() {
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    sb.write("worker.py", NOTIFY_WORKER);
    sb.write("secrets/MY_TOKEN", "notify-dir-token-0001");
    sb.config(&format!(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "n"
command = ["{py}", "worker.py"]
keys = ["MY_TOKEN"]
ready = {{ notify = true }}
"#,
        py = python()
    ));
    let notify_dirs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&ctl.runtime)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("agentsup-n-"))
            })
            .collect()
    };
    let run = ctl.start();
    run.wait_for("n.0: ready", PATIENCE);
    assert_eq!(notify_dirs().len(), 1, "{}", run.output());
    signal(run.pid(), 9);
    assert!(
        wait_until(PATIENCE, || notify_dirs().is_empty()),
        "left behind: {:?}",
        notify_dirs()
    );
}
