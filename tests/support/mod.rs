//! Test support: a [`Sandbox`] (temp dir + files) and two ways to run the real
//! binary: [`Sandbox::run`] waits for exit and captures everything; [`Sandbox::spawn`]
//! returns a [`Running`] supervisor whose output lines arrive on a channel, with
//! `wait_for` (an event plus a generous timeout, never a fixed sleep) and a
//! kill-on-drop guard so a failing test leaves nothing behind.
#![allow(dead_code)]

mod canary;
mod fixtures;
mod http;
pub use canary::*;
pub use fixtures::*;
pub use http::*;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Default patience for events in tests: generous, for a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentsup"))
}

/// A temp directory holding a config and its files.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Every file written with [`Sandbox::write`], so a leak scan of the sandbox
    /// ([`Canary::assert_not_in_sandbox`]) skips the test's own inputs.
    written: Mutex<Vec<PathBuf>>,
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for "never appears anywhere" assertions.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics with both streams shown unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts `canary` appears in neither stream, in any form
    /// ([`Canary::assert_absent`]).
    pub fn assert_no_leak(&self, canary: &Canary) -> &Self {
        canary.assert_absent(self);
        self
    }

    /// Asserts `needle` appears in stdout or stderr.
    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(
            self.all().contains(needle),
            "expected {needle:?} in output:\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
            written: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `rel` (creating parent dirs) and returns its path.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        self.written.lock().unwrap().push(p.clone());
        p
    }

    /// The files written with [`Sandbox::write`] so far.
    pub fn written(&self) -> Vec<PathBuf> {
        self.written.lock().unwrap().clone()
    }

    /// Writes an executable script.
    pub fn script(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.write(rel, content);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Writes `supervisor.toml`.
    pub fn config(&self, toml: &str) -> PathBuf {
        self.write("supervisor.toml", toml)
    }

    /// A command for the binary with a minimal, known environment (PATH kept so
    /// sh/python3/node resolve) and the sandbox as working directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs to completion (with a hang guard) and captures everything.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(self.cmd(args))
    }

    /// Like [`Sandbox::run`] with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        self.run_cmd(c)
    }

    pub fn run_cmd(&self, mut c: Command) -> Output {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = c.spawn().expect("spawn agentsup");
        let pid = child.id() as i32;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(out) => {
                let out = out.expect("wait");
                Output {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                }
            }
            Err(_) => {
                // SAFETY: plain kill(2) of the process group we created.
                unsafe { libc_kill(-pid, 9) };
                panic!("agentsup did not exit within 120 s");
            }
        }
    }

    /// Starts the binary and returns a handle whose output lines (stdout and stderr,
    /// merged, tagged) arrive on a channel.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_cmd(self.cmd(args))
    }

    pub fn spawn_cmd(&self, mut c: Command) -> Running {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().expect("spawn agentsup");
        let (tx, rx) = channel();
        let all = Arc::new(Captured::default());
        for (stream, tag) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "out",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "err",
            ),
        ] {
            let tx = tx.clone();
            let all = all.clone();
            let stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf)
                                .trim_end_matches('\n')
                                .to_string();
                            all.update(|s| {
                                // One lock for the line and its newline, so the
                                // other stream's reader cannot interleave.
                                s.text.push_str(&line);
                                s.text.push('\n');
                            });
                            if tx.send((tag, line)).is_err() {
                                // The test stopped listening; keep draining.
                            }
                        }
                    }
                }
                // Counted only after the last line is in `text` (and on the
                // channel): `drain` relies on that order.
                all.update(|s| s.closed += 1);
            });
        }
        Running {
            child: Some(child),
            lines: rx,
            all,
        }
    }
}

unsafe fn libc_kill(pid: i32, sig: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        kill(pid, sig);
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc_kill(pid, sig) }
}

/// True while `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Waits until `f()` is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    f()
}

/// Asserts that every pid in `pids` is gone (or a zombie) within [`PATIENCE`],
/// polling, never a fixed sleep. Exists because "after agentsup is killed, each
/// process it started must die too" is checked by several tests; the failure reads
/// "{what} {pid} outlived {outlived} (still alive after {PATIENCE:?})".
pub fn assert_all_die(pids: &[i32], what: &str, outlived: &str) {
    for &p in pids {
        assert!(
            wait_until(PATIENCE, || !alive(p)),
            "{what} {p} outlived {outlived} (still alive after {PATIENCE:?})"
        );
    }
}

/// Everything a [`Running`] printed, and how many of its two output streams
/// reached EOF; `changed` is notified on every update.
#[derive(Default)]
struct Captured {
    state: Mutex<CapturedState>,
    changed: Condvar,
}

#[derive(Default)]
struct CapturedState {
    /// stdout and stderr lines, merged in arrival order.
    text: String,
    /// Reader threads that reached EOF (0..=2).
    closed: usize,
}

impl Captured {
    fn update(&self, f: impl FnOnce(&mut CapturedState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits until `pred(text, both streams closed)` holds; returns whether it did
    /// within `timeout`.
    fn wait(&self, timeout: Duration, mut pred: impl FnMut(&str, bool) -> bool) -> bool {
        let guard = self.state.lock().unwrap();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !pred(&s.text, s.closed == 2))
            .unwrap();
        pred(&guard.text, guard.closed == 2)
    }
}

/// A supervisor under test.
pub struct Running {
    pub child: Option<Child>,
    pub lines: Receiver<(&'static str, String)>,
    all: Arc<Captured>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Everything printed so far (after [`Running::wait_exit`]: everything).
    pub fn output(&self) -> String {
        self.all.state.lock().unwrap().text.clone()
    }

    /// Waits until the printed output so far satisfies `pred(output, closed)`,
    /// where `closed` says both stdout and stderr reached EOF (nothing more will
    /// come). Does not consume [`Running::lines`]. Returns whether `pred` held
    /// within `timeout`.
    pub fn wait_output(&self, timeout: Duration, pred: impl FnMut(&str, bool) -> bool) -> bool {
        self.all.wait(timeout, pred)
    }

    /// Waits until both output streams reached EOF, so [`Running::output`] holds
    /// every line printed; returns whether they did within `timeout`. After the
    /// process exited this is quick, unless a leftover descendant holds the pipes.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.wait_output(timeout, |_, closed| closed)
    }

    /// Waits for a line containing `needle`; panics with the output so far if it
    /// does not come within `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_match(|l| l.contains(needle), timeout)
            .unwrap_or_else(|| {
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                    self.output()
                )
            })
    }

    /// Waits until every needle has appeared in some line, in any order.
    pub fn wait_for_all(&self, needles: &[&str], timeout: Duration) {
        let mut left: Vec<&str> = needles.to_vec();
        let found = self.wait_for_match(
            |l| {
                left.retain(|n| !l.contains(n));
                left.is_empty()
            },
            timeout,
        );
        if found.is_none() {
            panic!(
                "not all of {needles:?} appeared within {timeout:?}; output so far:\n{}",
                self.output()
            );
        }
    }

    /// Waits for a line satisfying `pred`.
    pub fn wait_for_match(
        &self,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) if pred(&line) => return Some(line),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    /// Waits for `n` lines containing `marker` and returns the pid each one
    /// announces (the number right after the last `marker`, e.g. `"| pid "` for a
    /// worker that prints `pid $$`). Exists so tests that must later check those
    /// processes died do not each repeat the wait-and-parse loop; panics (with the
    /// output so far) like [`Running::wait_for`] if a line does not come within
    /// [`PATIENCE`], and names the line if it holds no pid.
    pub fn announced_pids(&self, n: usize, marker: &str) -> Vec<i32> {
        (0..n)
            .map(|_| {
                let line = self.wait_for(marker, PATIENCE);
                let pid = line.rsplit(marker).next().unwrap().trim();
                pid.parse()
                    .unwrap_or_else(|e| panic!("no pid after {marker:?} in {line:?}: {e}"))
            })
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Waits for exit; returns the code (or 128+signal). After an exit it also
    /// waits (up to [`PATIENCE`]) for the output readers to reach EOF, so
    /// [`Running::output`] right after this is complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let end = Instant::now() + timeout;
        let code = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    break status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                }
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        };
        if !self.drain(PATIENCE) {
            eprintln!(
                "warning: agentsup exited but its stdout/stderr stayed open for {PATIENCE:?} \
                 (a leftover process holds them?); output may be incomplete"
            );
        }
        Some(code)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(-(child.id() as i32), 9);
                signal(child.id() as i32, 9);
                let _ = child.wait();
            }
        }
    }
}

/// What agentsup prints (then exits 78) when it cannot bind `[supervisor] health`
/// (src/supervisor/startup.rs).
pub const HEALTH_BIND_FAILED: &str = "cannot listen on health address";

/// Whether `output` holds the start-up check report of `agentsup run` (pretty or
/// JSON). `run` binds the health port before it loads the sources and prints that
/// report after, so once it appears the port is agentsup's.
fn printed_check_report(output: &str) -> bool {
    output.contains("agentsup check:") || output.contains("\"event\":\"check\"")
}

/// Starts `agentsup run` with its health server on a loopback port picked here:
/// `start(port)` writes a config with `health = "127.0.0.1:{port}"` and spawns.
/// A port found free can be taken by another process before agentsup binds it; if
/// agentsup then reports it cannot listen there, this retries with another port
/// (up to 5 times). Returns as soon as agentsup has printed its check report (it
/// has bound the port by then), with the port.
pub fn spawn_with_health_port(mut start: impl FnMut(u16) -> Running) -> (Running, u16) {
    let mut failures = String::new();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut run = start(port);
        let settled = run.wait_output(PATIENCE, |out, closed| {
            printed_check_report(out) || out.contains(HEALTH_BIND_FAILED) || closed
        });
        let out = run.output();
        if printed_check_report(&out) {
            return (run, port);
        }
        assert!(
            settled,
            "agentsup printed neither its check report nor {HEALTH_BIND_FAILED:?} within \
             {PATIENCE:?}; output so far:\n{out}"
        );
        assert!(
            out.contains(HEALTH_BIND_FAILED),
            "agentsup exited before it served on port {port}:\n{out}"
        );
        // Port taken in between: agentsup exits 78; try another one.
        let code = run.wait_exit(PATIENCE);
        failures.push_str(&format!("port {port} (exit {code:?}):\n{}\n", run.output()));
    }
    panic!("agentsup could not listen on any of 5 free ports:\n{failures}");
}

/// The auth-rotation scenario that `run` and `start = "fork"` must both pass:
/// `sb`'s config has a `dir` source at `secrets/` and a worker running
/// `tests/fixtures/openai_auth.py` whose provider accepts only `keys.new`, and
/// `secrets/OPENAI_API_KEY` holds `keys.old`. Asserts the failure is classified as
/// auth (with the echoed-key hint) and the worker waits for a new key, then writes
/// `new_key`, asserts the change is seen, the worker authenticates and agentsup
/// exits 0 on SIGTERM without printing either key. Returns the whole output for
/// further checks. Exists so both start modes are held to the very same steps.
pub fn assert_auth_failure_then_rotation_recovers(sb: &Sandbox, keys: &RotationKeys) -> String {
    let mut run = sb.spawn(&["run", "--no-color"]);
    let line = run.wait_for("class auth", PATIENCE);
    assert!(
        line.contains("the key it echoed is the injected OPENAI_API_KEY"),
        "{line}"
    );
    run.wait_for("its keys are unchanged", PATIENCE);
    // Rotate: the provider now wants `new_key`, and the secret directory holds it.
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.new.value()));
    run.wait_for("OPENAI_API_KEY changed", PATIENCE);
    run.wait_for("authenticated with key of length", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    keys.assert_absent(&run);
    run.output()
}

/// The real python3 executable (not a pyenv/asdf shim script, which would add its
/// own variables to the environment a test inspects).
pub fn python() -> String {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the tests");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
    .clone()
}

/// Runs `tests/setup-deps.sh` once per test process (serialised across test
/// processes with a lock file) and returns the test venv's python, which has the
/// packages of `tests/requirements.txt` and `examples/*/requirements.txt`.
pub fn test_venv_python() -> PathBuf {
    static DONE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(root.join("target")).unwrap();
        let lock = std::fs::File::create(root.join("target/test-venv.lock")).unwrap();
        // SAFETY: flock(2) on a file descriptor we own; no memory is involved.
        unsafe {
            unsafe extern "C" {
                fn flock(fd: i32, op: i32) -> i32;
            }
            use std::os::fd::AsRawFd;
            flock(lock.as_raw_fd(), 2);
        }
        let status = Command::new("bash")
            .arg(root.join("tests/setup-deps.sh"))
            .status()
            .expect("run tests/setup-deps.sh");
        assert!(
            status.success(),
            "tests/setup-deps.sh failed (needs network for pip/npm on first run)"
        );
        drop(lock);
        root.join("target/test-venv/bin/python")
    })
    .clone()
}

/// A vault-style `command` source block that appends a line to `runs` each time it
/// runs and yields `MY_TOKEN`; [`count_runs`] reads how often it ran.
pub fn counting_command_source(runs: &Path) -> String {
    format!(
        "[[source]]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo run >> '{}'; echo MY_TOKEN=abcdefgh123\"]\n",
        runs.display()
    )
}

/// How many times the source of [`counting_command_source`] has run.
pub fn count_runs(runs: &Path) -> usize {
    std::fs::read_to_string(runs)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}
