//! The process module's tests: real children, real signals.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::*;
use crate::auth::Termination;
use crate::reaper::Reaper;
use crate::reaper::test_support::{block_on, isolated};

const SYS_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn env() -> Vec<(String, String)> {
    vec![("PATH".into(), SYS_PATH.into())]
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn spec(items: &[&str]) -> SpawnSpec {
    SpawnSpec {
        argv: argv(items),
        env: env(),
        cwd: "/".into(),
        stdin_null: true,
        capture: true,
        own_group: true,
        reset_signals: DEFAULT_RESET_SIGNALS.to_vec(),
        creds: None,
    }
}

fn write_script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, body).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The `/proc/<pid>/status` line `key:`, without the key.
fn proc_status(pid: u32, key: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Dead means gone, or a zombie nobody has reaped yet (PID 1 in a test
/// container may not reap).
fn is_dead(pid: u32) -> bool {
    proc_status(pid, "State").is_none_or(|s| s.starts_with('Z'))
}

fn wait_dead(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn resolves_on_the_workers_path_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    write_script(&bin, "only-here", "#!/bin/sh\n", 0o755);
    write_script(&bin, "not-exec", "#!/bin/sh\n", 0o644);
    let path = bin.to_str().unwrap();

    assert_eq!(
        resolve_program("only-here", Some(path), dir.path()).unwrap(),
        bin.join("only-here")
    );
    // `sh` is on agentsup's PATH but not on the worker's.
    let err = resolve_program("sh", Some("/nonexistent"), dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command \"sh\" not found on the worker's PATH (/nonexistent)"
    );
    assert!(matches!(
        resolve_program("not-exec", Some(path), dir.path()),
        Err(SpawnError::NotFound { .. })
    ));
    assert!(matches!(
        resolve_program("sh", None, dir.path()),
        Err(SpawnError::NoPath { .. })
    ));
    // A relative PATH entry (and an empty one) is relative to the worker's cwd.
    assert_eq!(
        resolve_program("only-here", Some("bin"), dir.path()).unwrap(),
        bin.join("only-here")
    );
    assert_eq!(
        resolve_program("only-here", Some(""), &bin).unwrap(),
        bin.join("only-here")
    );
}

#[test]
fn programs_with_a_slash_are_relative_to_cwd() {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "run.sh", "#!/bin/sh\n", 0o755);
    write_script(dir.path(), "data.txt", "", 0o644);
    assert_eq!(
        resolve_program("./run.sh", None, dir.path()).unwrap(),
        dir.path().join("./run.sh")
    );
    assert!(matches!(
        resolve_program("./data.txt", None, dir.path()),
        Err(SpawnError::NotExecutable { .. })
    ));
    assert!(matches!(
        resolve_program("./missing", None, dir.path()),
        Err(SpawnError::Missing { .. })
    ));
    assert!(matches!(
        resolve_program("", None, dir.path()),
        Err(SpawnError::EmptyCommand)
    ));
}

#[test]
fn run_capture_collects_output_and_status() {
    let out = run_capture(
        &argv(&["sh", "-c", "printf out; printf err >&2; exit 3"]),
        &env(),
        Path::new("/"),
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    assert_eq!(out.status, Termination::Exited(3));
    assert_eq!(out.stdout, b"out");
    assert_eq!(out.stderr, b"err");
    assert!(!format!("{out:?}").contains("out\""));
}

/// What reaches the output after the command exited is not its output (a
/// process that copied the descriptor could otherwise add values), and a copy
/// held open does not stall the read.
#[test]
fn run_capture_takes_nothing_written_after_the_command_exited() {
    let script = "p=$$; printf 'A=first\\n'; \
                  (while kill -0 $p 2>/dev/null; do sleep 0.01; done; sleep 0.2; \
                   printf 'B=injected\\n'; sleep 5) & exit 0";
    let started = Instant::now();
    let out = run_capture(
        &argv(&["sh", "-c", script]),
        &env(),
        Path::new("/"),
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    assert_eq!(out.status, Termination::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "A=first\n");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn run_capture_gets_exactly_the_given_environment() {
    let out = run_capture(
        &argv(&["env"]),
        &[
            ("PATH".into(), SYS_PATH.into()),
            ("ONLY".into(), "this".into()),
        ],
        Path::new("/"),
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["ONLY=this".to_owned(), format!("PATH={SYS_PATH}")]);
}

#[test]
fn run_capture_timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let started = Instant::now();
    let err = run_capture(
        &argv(&["sh", "-c", &script]),
        &env(),
        Path::new("/"),
        Duration::from_millis(500),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let bg: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(bg, Duration::from_secs(5)),
        "background sleep survived"
    );
}

#[test]
fn children_start_with_no_signal_blocked() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&term), Some(&mut old)).unwrap();
    let out = run_capture(
        &argv(&["grep", "SigBlk", "/proc/self/status"]),
        &env(),
        Path::new("/"),
        Duration::from_secs(20),
        None,
    );
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
    let out = String::from_utf8(out.unwrap().stdout.clone()).unwrap();
    assert_eq!(out.split_whitespace().nth(1), Some("0000000000000000"));
}

#[test]
fn run_capture_reports_exec_failure() {
    let dir = tempfile::tempdir().unwrap();
    // Executable bit but no valid interpreter: exec itself fails.
    write_script(dir.path(), "broken", "#!/nonexistent/interp\n", 0o755);
    let err = run_capture(
        &argv(&["./broken"]),
        &env(),
        dir.path(),
        Duration::from_secs(20),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::Start { .. }), "{err}");
}

#[test]
fn kill_refuses_pid_zero() {
    assert!(kill_group(0, libc::SIGTERM).is_err());
    assert!(kill_pid(0, libc::SIGTERM).is_err());
    // A group that does not exist is fine.
    assert!(kill_group(i32::MAX as u32, libc::SIGTERM).is_ok());
}

#[test]
fn spawner_children_are_ours_with_pipes_and_a_clean_mask() {
    isolated(
        concat!(
            module_path!(),
            "::spawner_children_are_ours_with_pipes_and_a_clean_mask"
        ),
        || {
            block_on(async {
                let reaper = Reaper::start().unwrap();
                let spawner = Spawner::start(reaper).unwrap();
                let mut child = spawner
                    .spawn(spec(&[
                        "sh",
                        "-c",
                        "echo hello; echo oops >&2; exec sleep 30",
                    ]))
                    .await
                    .unwrap();
                let mut line = [0u8; 6];
                child
                    .stdout
                    .as_mut()
                    .unwrap()
                    .read_exact(&mut line)
                    .await
                    .unwrap();
                assert_eq!(&line, b"hello\n");
                let mut err = [0u8; 5];
                child
                    .stderr
                    .as_mut()
                    .unwrap()
                    .read_exact(&mut err)
                    .await
                    .unwrap();
                assert_eq!(&err, b"oops\n");

                let ppid = proc_status(child.pid, "PPid").unwrap();
                assert_eq!(ppid, std::process::id().to_string());
                assert_eq!(
                    proc_status(child.pid, "SigBlk").unwrap(),
                    "0000000000000000"
                );
                // Own group: the pgid (field 5 of /proc/<pid>/stat) is the pid.
                let stat = fs::read_to_string(format!("/proc/{}/stat", child.pid)).unwrap();
                let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
                let pgid = after_comm.split(' ').nth(2).unwrap();
                assert_eq!(pgid, child.pid.to_string());

                kill_group(child.pid, libc::SIGTERM).unwrap();
                let status = child.exit.await.unwrap();
                assert_eq!(status.termination, Termination::Signaled(libc::SIGTERM));
            });
        },
    );
}

#[test]
fn ignored_signals_are_reset_in_the_child() {
    isolated(
        concat!(module_path!(), "::ignored_signals_are_reset_in_the_child"),
        || {
            // As if started from a non-interactive shell's background job,
            // and as the Rust runtime leaves SIGPIPE in agentsup itself.
            crate::sys::signal::ignore(libc::SIGINT).unwrap();
            crate::sys::signal::ignore(libc::SIGPIPE).unwrap();
            block_on(async {
                let spawner = Spawner::start(Reaper::start().unwrap()).unwrap();
                let sigint_bit = 1u64 << (libc::SIGINT - 1);
                let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
                let sig_ign =
                    |pid| u64::from_str_radix(&proc_status(pid, "SigIgn").unwrap(), 16).unwrap();

                let mut kept = spec(&["sleep", "30"]);
                kept.reset_signals.clear();
                let kept = spawner.spawn(kept).await.unwrap();
                assert_ne!(sig_ign(kept.pid) & sigint_bit, 0, "control: inherited");
                assert_eq!(sig_ign(kept.pid) & sigpipe_bit, 0, "SIGPIPE, always reset");

                let reset = spawner.spawn(spec(&["sleep", "30"])).await.unwrap();
                assert_eq!(sig_ign(reset.pid) & sigint_bit, 0);

                for child in [kept, reset] {
                    kill_group(child.pid, libc::SIGKILL).unwrap();
                    child.exit.await.unwrap();
                }
            });
        },
    );
}

#[test]
fn workers_survive_the_exit_of_the_thread_that_asked() {
    isolated(
        concat!(
            module_path!(),
            "::workers_survive_the_exit_of_the_thread_that_asked"
        ),
        || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_keep_alive(Duration::from_millis(50))
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let spawner = Spawner::start(Reaper::start().unwrap()).unwrap();
                // Ask from a blocking-pool thread, which then idles out and exits.
                // Had it forked the child itself, PDEATHSIG would kill the child.
                let handle = tokio::runtime::Handle::current();
                let (child, tid) = tokio::task::spawn_blocking(move || {
                    let tid = nix::unistd::gettid();
                    (handle.block_on(spawner.spawn(spec(&["sleep", "30"]))), tid)
                })
                .await
                .unwrap();
                let mut child = child.unwrap();
                // Waits for the event itself, the asking thread's exit (it
                // idles out after 50 ms), not for a guessed time.
                let task = format!("/proc/self/task/{tid}");
                let deadline = Instant::now() + Duration::from_secs(30);
                while std::path::Path::new(&task).exists() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert!(
                    !std::path::Path::new(&task).exists(),
                    "the blocking thread never exited: the test would prove nothing"
                );
                // A PDEATHSIG is sent as that thread exits: a child it killed
                // is reaped within moments, one that survived is not.
                assert!(
                    tokio::time::timeout(Duration::from_secs(1), &mut child.exit)
                        .await
                        .is_err(),
                    "worker died with the blocking thread"
                );
                assert!(!is_dead(child.pid), "worker died with the blocking thread");
                kill_group(child.pid, libc::SIGKILL).unwrap();
                assert_eq!(
                    child.exit.await.unwrap().termination,
                    Termination::Signaled(libc::SIGKILL)
                );
            });
        },
    );
}

/// The child of this test prints a worker's pid and waits to be SIGKILLed; the
/// worker must die with it (PDEATHSIG).
#[test]
fn workers_die_with_a_killed_supervisor() {
    const NAME: &str = "process::tests::workers_die_with_a_killed_supervisor";
    if std::env::var("AGENTSUP_ISOLATED_TEST").as_deref() == Ok(NAME) {
        block_on(async {
            let spawner = Spawner::start(Reaper::start().unwrap()).unwrap();
            let child = spawner.spawn(spec(&["sleep", "60"])).await.unwrap();
            println!("WORKER {}", child.pid);
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        return;
    }
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut supervisor = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("AGENTSUP_ISOLATED_TEST", NAME)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = io::BufReader::new(supervisor.stdout.take().unwrap());
    let worker: u32 = stdout
        .lines()
        .map_while(Result::ok)
        // libtest prints the test name on the same line, before our output.
        .find_map(|l| {
            l.split_once("WORKER ")
                .map(|(_, p)| p.trim().parse().unwrap())
        })
        .expect("worker pid");
    assert!(!is_dead(worker));
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    assert!(
        wait_dead(worker, Duration::from_secs(5)),
        "worker survived SIGKILL of its supervisor"
    );
}

#[test]
fn run_capture_goes_through_a_running_reaper() {
    isolated(
        concat!(
            module_path!(),
            "::run_capture_goes_through_a_running_reaper"
        ),
        || {
            let reaper = Reaper::start().unwrap();
            // Passing None must still use the reaper: a direct waitpid would race it.
            for _ in 0..20 {
                let out = run_capture(
                    &argv(&["sh", "-c", "echo hi; exit 4"]),
                    &env(),
                    Path::new("/"),
                    Duration::from_secs(20),
                    None,
                )
                .unwrap();
                assert_eq!(out.status, Termination::Exited(4));
                assert_eq!(out.stdout, b"hi\n");
            }
            let out = run_capture(
                &argv(&["true"]),
                &env(),
                Path::new("/"),
                Duration::from_secs(20),
                Some(&reaper),
            )
            .unwrap();
            assert_eq!(out.status, Termination::Exited(0));
            assert_eq!(reaper.orphans_reaped(), 0);
        },
    );
}
