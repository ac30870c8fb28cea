//! `agentsup exec` (SPEC 1): run one command with a built environment, with init
//! duties, like tini.
//!
//! Synchronous on purpose (crates.md §5): one child, one signal thread, one reaping
//! loop. No tokio, and no [`crate::reaper`]: this code owns `waitpid` for the life of
//! the process, so it must not run beside the reaper (it refuses to).
//!
//! What it does, and the decisions where tini offers a choice:
//!
//! * The command is resolved on the environment's own `PATH` (SPEC 3), started in
//!   its own process group with `PR_SET_PDEATHSIG`, and inherits stdin/stdout/stderr.
//! * If stdin is a terminal whose foreground group is ours, the command's group is
//!   made the foreground group, so Ctrl-C and Ctrl-Z reach it directly, and the
//!   terminal is handed back when it exits. agentsup itself ignores SIGTTIN/SIGTTOU
//!   (as tini does) so it is not stopped for touching the terminal from the
//!   background; the command gets them back at their defaults.
//! * Every catchable signal is forwarded to the command's group, except: SIGCHLD
//!   (ours), SIGPIPE (Rust ignores it; a handler would turn a broken pipe on
//!   agentsup's own stderr into a SIGPIPE for the command), SIGTTIN/SIGTTOU
//!   (above) and glibc's own 32 and 33. SIGTSTP and SIGCONT sent to agentsup are
//!   forwarded, so `kill -TSTP` stops the command's group while agentsup keeps
//!   running. The fault signals (SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE,
//!   SIGSEGV, SIGSYS) are forwarded only when another process sent them with
//!   `kill(2)`; a real fault of agentsup's own is still a crash
//!   ([`crate::sys::signal::FaultForwarding`]). docs/operations.md has the table.
//! * What agentsup inherited ignored stays ignored in the command (as tini keeps
//!   it): under `nohup agentsup exec -- cmd`, a SIGHUP to agentsup is forwarded
//!   and `cmd` ignores it, as it would have without agentsup.
//! * agentsup is a child subreaper and reaps every process that is reparented to
//!   it, so zombies do not pile up when it runs as PID 1.
//! * When the command exits, the rest of its process group gets SIGTERM, then
//!   agentsup exits with the command's status (128+N for signal N) at once. tini
//!   leaves such processes alone by default; we don't, because SPEC 5 promises that
//!   no process agentsup started survives it, and in a container they would be
//!   SIGKILLed anyway when PID 1 exits. The signal is sent while the command is
//!   still an unreaped zombie, which keeps its group id from being reused. Processes
//!   that left the group (`setsid`, daemons) are not touched.
//! * Output masking (the default, like `op run`): the command's stdout and stderr
//!   are pipes, each copied to agentsup's own stdout and stderr by a thread, line
//!   by line, with every form of every secret replaced by `[redacted:NAME]`
//!   ([`crate::redact`]), in each line as a terminal shows it, control characters
//!   removed, as worker output is ([`ShownLines`]). A partial line (a prompt) appears when its newline does,
//!   or at exit; the command sees pipes, not the terminal, on stdout and stderr.
//!   After the command exits, agentsup waits up to [`DRAIN_WAIT`] for the pipes to
//!   reach end of file (a process that left the group may hold them open).
//!   `--no-masking` passes the descriptors through untouched instead.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::iterator::Signals;

use crate::auth::Termination;
use crate::output::{Frame, LineFramer};
use crate::process::{self, ChildSetup, SpawnError, SpawnSpec};
use crate::reaper::{self, Reaper};
use crate::redact::{Redactor, ShownLines};
use crate::sys::signal::{FAULTS, FaultForwarding};

/// How long, after the command exited, masked output may take to reach end of file.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Signals `exec` handles itself or leaves at their defaults; see the module docs.
const NOT_FORWARDED: &[libc::c_int] = &[libc::SIGCHLD, libc::SIGPIPE, libc::SIGTTIN, libc::SIGTTOU];

/// The signals forwarded to the command through signal-hook: the standard ones
/// (1–31) and the real-time ones glibc leaves to applications, minus those in the
/// module docs and the fault signals ([`FAULTS`], forwarded by their own handler).
/// Signals 32 and 33 are glibc's own and never touched.
fn forwarded_signals() -> Vec<libc::c_int> {
    (1..=31)
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
        .filter(|s| {
            !signal_hook::consts::FORBIDDEN.contains(s)
                && !NOT_FORWARDED.contains(s)
                && !FAULTS.contains(s)
        })
        .collect()
}

/// The signals agentsup was started with ignored that the command must inherit
/// ignored too (`nohup` leaves SIGHUP so; a non-interactive shell's background
/// job, SIGINT and SIGQUIT). Read before any handler is installed.
fn inherited_ignored() -> Vec<libc::c_int> {
    forwarded_signals()
        .into_iter()
        .chain(FAULTS)
        .chain([libc::SIGTTIN, libc::SIGTTOU])
        .filter(|&s| crate::sys::signal::is_ignored(s))
        .collect()
}

/// Runs `argv` with exactly `env` in `cwd` as agentsup's only child, forwarding
/// signals and reaping zombies until it exits, and returns the status `agentsup
/// exec` should exit with: the command's exit status, or 128+N if signal N killed
/// it.
///
/// With `mask`, the command's stdout and stderr are copied through it (module
/// docs); without, they are inherited.
///
/// Call it as the last thing before exiting: it installs process-wide signal
/// handlers and leaves them installed. Blocking; must not run inside async code or
/// beside [`Reaper`].
pub(crate) fn run_exec(
    argv: &[String],
    env: Vec<(String, String)>,
    cwd: &Path,
    mask: Option<Arc<Redactor>>,
) -> Result<i32, SpawnError> {
    let program = argv.first().ok_or(SpawnError::EmptyCommand)?;
    if Reaper::current().is_some() {
        return Err(SpawnError::Io {
            what: "starting the command",
            source: io::Error::other(
                "a reaper is running in this process and would take the command's exit status",
            ),
        });
    }
    // Resolve before changing any process state, so "not found" leaves none behind.
    process::resolve_program(program, process::path_of(&env), cwd)?;

    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        // Still correct for the command itself; only its orphans go elsewhere.
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
    let keep_ignored = inherited_ignored();
    for sig in [libc::SIGTTIN, libc::SIGTTOU] {
        crate::sys::signal::ignore(sig).map_err(|source| SpawnError::Io {
            what: "ignoring terminal stop signals",
            source,
        })?;
    }
    // Registered before the command starts, so a signal that arrives while it is
    // being started is queued and forwarded rather than lost (or fatal to us).
    let mut signals = Signals::new(forwarded_signals()).map_err(|source| SpawnError::Io {
        what: "installing signal handlers",
        source,
    })?;
    let faults = FaultForwarding::start().map_err(|source| SpawnError::Io {
        what: "installing the fault-signal handlers",
        source,
    })?;
    let take_terminal = process::owns_terminal_foreground();
    let spec = SpawnSpec {
        argv: argv.to_vec(),
        env,
        cwd: cwd.to_path_buf(),
        stdin_null: false,
        capture: mask.is_some(),
        own_group: true,
        creds: None,
        reset_signals: vec![libc::SIGTTIN, libc::SIGTTOU],
    };
    // PDEATHSIG is sound here: the forking thread is this one, which stays in this
    // function until the command has been reaped.
    let setup = ChildSetup {
        pdeathsig: true,
        take_terminal,
        stdout_socket: false,
        ignore: &keep_ignored,
    };
    let mut child = match process::spawn_direct(&spec, setup) {
        Ok(child) => child,
        Err(e) => {
            faults.stop();
            return Err(e);
        }
    };
    let pid = child.pid;
    let (drained_tx, drained) = mpsc::channel();
    let mut copiers = 0;
    if let Some(redactor) = &mask {
        let out = child.stdout.take().map(|fd| {
            (
                Box::new(std::fs::File::from(fd)) as Box<dyn Read + Send>,
                true,
            )
        });
        let err = child.stderr.take().map(|fd| {
            (
                Box::new(std::fs::File::from(fd)) as Box<dyn Read + Send>,
                false,
            )
        });
        for (pipe, to_stdout) in out.into_iter().chain(err) {
            let redactor = Arc::clone(redactor);
            let done = drained_tx.clone();
            let spawned = thread::Builder::new()
                .name("agentsup-exec-mask".into())
                .spawn(move || {
                    if to_stdout {
                        mask_stream(pipe, io::stdout(), &redactor);
                    } else {
                        mask_stream(pipe, io::stderr(), &redactor);
                    }
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => copiers += 1,
                Err(source) => {
                    // Unmasked output is not an option, and nothing would read it.
                    faults.stop();
                    let _ = process::kill_group(pid, libc::SIGKILL);
                    let _ = reaper::reap_pid(pid, true);
                    return Err(SpawnError::Io {
                        what: "starting the output-masking thread",
                        source,
                    });
                }
            }
        }
    }
    drop(drained_tx);

    // True while the command is unreaped, so its pid is still its group id. The
    // forwarder holds the lock while signalling, the reaping loop while clearing it,
    // so no signal can reach a group id that was reused after the reap.
    let alive = Arc::new(Mutex::new(true));
    let handle = signals.handle();
    let forward = move |alive: &Mutex<bool>, sig| {
        let alive = alive.lock().unwrap_or_else(PoisonError::into_inner);
        if !*alive {
            return;
        }
        if let Err(e) = process::kill_group(pid, sig) {
            tracing::debug!(sig, error = %e, "cannot forward a signal");
        }
    };
    let forwarder = {
        let alive = Arc::clone(&alive);
        thread::Builder::new()
            .name("agentsup-exec-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    forward(&alive, sig);
                }
            })
    };
    // The fault signals arrive through their own handler (signal-hook refuses
    // SIGSEGV & co.), on their own thread.
    let fault_forwarder = forwarder.and_then(|f| {
        let alive = Arc::clone(&alive);
        thread::Builder::new()
            .name("agentsup-exec-faults".into())
            .spawn(move || {
                while let Some(sig) = faults.recv() {
                    forward(&alive, sig);
                }
            })
            .map(|g| (f, g))
    });
    let (forwarder, fault_forwarder) = match fault_forwarder {
        Ok(f) => f,
        Err(source) => {
            // Nothing could forward signals to it: don't leave it running.
            handle.close();
            faults.stop();
            let _ = process::kill_group(pid, libc::SIGKILL);
            let _ = reaper::reap_pid(pid, true);
            return Err(SpawnError::Io {
                what: "starting the signal-forwarding thread",
                source,
            });
        }
    };

    let result = reap_until_exit(pid, &alive, program);
    // The command's last lines: its group was signalled, so the pipes normally
    // close at once.
    let deadline = Instant::now() + DRAIN_WAIT;
    for _ in 0..copiers {
        let left = deadline.saturating_duration_since(Instant::now());
        if drained.recv_timeout(left).is_err() {
            break;
        }
    }
    if take_terminal {
        process::reclaim_terminal();
    }
    handle.close();
    faults.stop();
    let _ = forwarder.join();
    let _ = fault_forwarder.join();
    result.map(reaper::shell_exit_code)
}

/// Copies `from` to `to` line by line with every secret form replaced, flushing
/// after each read. Each line is redacted as a terminal shows it, through the
/// same [`ShownLines`] as worker output: control characters are not printed
/// (colours included), so a key printed in pieces joined by escape sequences,
/// backspaces or NULs cannot show whole (issue 12). Keeps reading when `to` fails
/// (a closed stdout), so the command never blocks on a full pipe nobody drains.
fn mask_stream(mut from: impl Read, mut to: impl Write, redactor: &Arc<Redactor>) {
    let mut framer = LineFramer::new();
    let mut shown = ShownLines::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let mut broken = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut pos = 0;
        while let Some(frame) = framer.next_frame(&buf[..n], &mut pos) {
            let (bytes, complete) = match frame {
                Frame::Line(line) => (line, true),
                Frame::Piece(piece) => (piece, false),
            };
            if let Some(text) = shown.redact(bytes, complete, redactor) {
                out.extend_from_slice(text);
            }
            if complete {
                out.push(b'\n');
            }
        }
        if !broken && (to.write_all(&out).is_err() || to.flush().is_err()) {
            broken = true;
        }
        out.clear();
    }
    // The last line had no newline (a prompt): printed without one.
    let last = match framer.finish() {
        Some(last) => Some(last),
        None if shown.in_long_line() => Some(&[][..]),
        None => None,
    };
    if let Some(text) = last.and_then(|last| shown.redact(last, true, redactor)) {
        out.extend_from_slice(text);
    }
    if !broken {
        let _ = to.write_all(&out).and_then(|()| to.flush());
    }
}

/// Reaps every child until the command itself exits; returns how it ended.
fn reap_until_exit(
    pid: u32,
    alive: &Mutex<bool>,
    program: &str,
) -> Result<Termination, SpawnError> {
    let lost = |source| SpawnError::Wait {
        program: program.to_owned(),
        source,
    };
    loop {
        // Peek first: the command stays an unreaped zombie (and its group id stays
        // reserved) until the rest of its group has been signalled.
        let next = reaper::peek_any_blocking().map_err(lost)?;
        if next == pid {
            let mut alive = alive.lock().unwrap_or_else(PoisonError::into_inner);
            *alive = false;
            let _ = process::kill_group(pid, libc::SIGTERM);
            drop(alive);
            return match reaper::reap_pid(pid, true).map_err(lost)? {
                Some(termination) => Ok(termination),
                None => Err(lost(io::Error::other("waitpid returned no status"))),
            };
        }
        match reaper::reap_pid(next, true) {
            Ok(Some(termination)) => {
                tracing::debug!(pid = next, %termination, "reaped an orphan");
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(pid = next, error = %e, "cannot reap an orphan"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::test_support::isolated;
    use std::time::{Duration, Instant};

    fn env() -> Vec<(String, String)> {
        vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn forwarded_signals_skip_the_ones_we_must_not_touch() {
        let list = forwarded_signals();
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGWINCH,
        ] {
            assert!(list.contains(&s), "{s} missing");
        }
        for s in [
            libc::SIGCHLD,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGPIPE,
            32,
            33,
        ] {
            assert!(!list.contains(&s), "{s} present");
        }
    }

    #[test]
    fn missing_command_is_reported_before_anything_changes() {
        let err = run_exec(&["no-such-cmd".into()], env(), Path::new("/"), None).unwrap_err();
        assert!(
            err.to_string().contains("not found on the worker's PATH"),
            "{err}"
        );
    }

    #[test]
    fn exit_status_and_signal_death_become_the_exit_code() {
        isolated(
            concat!(
                module_path!(),
                "::exit_status_and_signal_death_become_the_exit_code"
            ),
            || {
                assert_eq!(
                    run_exec(&sh("exit 3"), env(), Path::new("/"), None).unwrap(),
                    3
                );
                assert_eq!(
                    run_exec(&sh("kill -TERM $$"), env(), Path::new("/"), None).unwrap(),
                    128 + libc::SIGTERM
                );
                // A backgrounded grandchild is reaped (or signalled) without
                // confusing the status of the command itself.
                assert_eq!(
                    run_exec(
                        &sh("(sleep 0.1; exit 9) & sleep 0.3; exit 0"),
                        env(),
                        Path::new("/"),
                        None
                    )
                    .unwrap(),
                    0
                );
            },
        );
    }

    #[test]
    fn signals_sent_to_us_reach_the_command() {
        isolated(
            concat!(module_path!(), "::signals_sent_to_us_reach_the_command"),
            || {
                let dir = tempfile::tempdir().unwrap();
                let ready = dir.path().join("ready");
                let script = format!(
                    "trap 'exit 7' TERM; touch {}; while :; do sleep 0.05; done",
                    ready.display()
                );
                let sender = thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !ready.exists() {
                        assert!(Instant::now() < deadline, "command never started");
                        thread::sleep(Duration::from_millis(10));
                    }
                    process::kill_pid(std::process::id(), libc::SIGTERM).unwrap();
                });
                assert_eq!(run_exec(&sh(&script), env(), dir.path(), None).unwrap(), 7);
                sender.join().unwrap();
            },
        );
    }
}
