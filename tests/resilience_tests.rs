//! Faults that must end in a bounded, clean stop (issue 13): a stalled log reader,
//! a slow one, leftovers of workers, hostile secret files, starved health port.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Reads a pid the worker wrote to `rel`, waiting for it.
fn read_pid(sb: &Sandbox, rel: &str) -> i32 {
    let path = sb.path().join(rel);
    let mut pid = None;
    assert!(
        wait_until(PATIENCE, || {
            pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        }),
        "{rel} was not written"
    );
    pid.unwrap()
}

#[test]
fn sigterm_with_stdout_never_read_ends_within_shutdown_timeout() {
    let sb = Sandbox::new();
    // Fills agentsup's stdout (a pipe nobody reads) and ignores SIGTERM, so both
    // the 90 % kill and the output deadline are needed.
    sb.write(
        "chatty.py",
        "import os, signal, sys\n\
         signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         open('chatty.pid', 'w').write(str(os.getpid()))\n\
         line = 'x' * 200 + '\\n'\n\
         while True:\n    sys.stdout.write(line)\n",
    );
    sb.config(&format!(
        "[supervisor]\nshutdown_timeout = \"5s\"\n\n[[worker]]\nname = \"chatty\"\ncommand = [\"{}\", \"chatty.py\"]\n",
        python()
    ));
    let mut cmd = sb.cmd(&["run"]);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap(); // held open, never read
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let worker = read_pid(&sb, "chatty.pid");
    // The pipe (64 KiB) and agentsup's queue (1 MiB) fill in well under a second
    // at this rate; the assertions below hold either way.
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    signal(child.id() as i32, 15);
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let took = sent.elapsed();
    if status.is_none() {
        signal(-(child.id() as i32), 9);
        let _ = child.wait();
    }
    drop(stdout);
    let err = err.join().unwrap();
    assert!(
        status.is_some(),
        "agentsup still alive 20 s after SIGTERM\n{err}"
    );
    assert!(
        took <= Duration::from_secs(7),
        "agentsup took {took:?} to exit (shutdown_timeout 5 s + 2 s)\n{err}"
    );
    assert_eq!(status.unwrap().code(), Some(0), "{err}");
    assert!(!alive(worker), "the worker survived");
    assert!(
        err.contains("could not be delivered"),
        "no note of the undelivered output on stderr:\n{err}"
    );
}

#[test]
fn slow_reader_gets_every_last_line_and_the_exit_is_classified_auth() {
    let sb = Sandbox::new();
    // Short lines first: formatted as JSON they fill agentsup's queue and stdout
    // pipe while the raw rest still fits the worker's pipe, so the worker exits
    // while its pumps wait for the reader (who sleeps 8 s). The traceback then
    // sits behind thousands of stdout lines.
    let mut tb = String::from(
        "import sys\nfor i in range(12000):\n    print('f%05d' % i)\nsys.stdout.flush()\n",
    );
    tb.push_str("sys.stderr.write('Traceback (most recent call last):\\n')\n");
    for i in 0..19 {
        tb.push_str(&format!(
            "sys.stderr.write('  File \"agent.py\", line {i}, in step{i}\\n')\n"
        ));
    }
    tb.push_str("sys.stderr.write(\"openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided', 'code': 'invalid_api_key'}}\\n\")\nsys.exit(1)\n");
    sb.write("dying.py", tb);
    sb.config(&format!(
        "[[worker]]\nname = \"dying\"\ncommand = [\"{}\", \"dying.py\"]\nrestart = \"never\"\n",
        python()
    ));
    let out = sb.path().join("out.txt");
    let script = format!(
        "'{}' run --log-format json | (sleep 8; cat > '{}')",
        bin().display(),
        out.display()
    );
    let mut c = std::process::Command::new("sh");
    c.args(["-c", &script])
        .current_dir(sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", sb.path());
    let res = sb.run_cmd(c);
    let text = std::fs::read_to_string(&out).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let lines = |stream: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["worker"] == "dying" && r["stream"] == stream)
            .filter_map(|r| r["line"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        lines("stdout").len(),
        12000,
        "stdout lines lost\n{}",
        res.stderr
    );
    let err = lines("stderr");
    assert_eq!(err.len(), 21, "traceback lines lost: {err:?}");
    assert!(err[20].starts_with("openai.AuthenticationError"));
    let classes: Vec<&str> = records.iter().filter_map(|r| r["class"].as_str()).collect();
    assert_eq!(classes, ["auth"], "exit classes: {classes:?}\n{text}");
    assert!(!text.contains("kept its output open"), "false leak warning");
}

#[test]
fn a_backgrounded_child_dies_with_its_replica() {
    let sb = Sandbox::new();
    sb.config(
        "[[worker]]\nname = \"bg\"\n\
         command = [\"sh\", \"-c\", \"sleep 300 >/dev/null 2>&1 & echo $! > bg.pid; exit 3\"]\n\
         restart = \"never\"\n\n\
         [[worker]]\nname = \"keep\"\ncommand = [\"sleep\", \"300\"]\n",
    );
    let mut run = sb.spawn(&["run"]);
    run.wait_for("bg.0", PATIENCE);
    let sleeper = read_pid(&sb, "bg.pid");
    run.wait_for("failed", PATIENCE);
    assert_all_die(&[sleeper], "the backgrounded sleep", "its replica's exit");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(1));
}

#[test]
fn sigkill_of_agentsup_takes_a_worker_s_children_along() {
    let sb = Sandbox::new();
    sb.config(
        "[[worker]]\nname = \"tree\"\n\
         command = [\"sh\", \"-c\", \"sleep 300 & echo $! > child.pid; wait\"]\n",
    );
    let mut run = sb.spawn(&["run"]);
    let child = read_pid(&sb, "child.pid");
    run.signal(9);
    run.wait_exit(PATIENCE);
    assert_all_die(&[child], "a worker's child", "a SIGKILL of agentsup");
}

#[test]
fn a_grandchild_reparented_during_the_stop_is_swept() {
    let sb = Sandbox::new();
    // On SIGTERM the worker starts a process in a new session (out of its group)
    // and exits: that process is reparented to agentsup while it stops.
    sb.script(
        "escape.sh",
        "#!/bin/sh\n\
         trap 'setsid sh -c \"echo \\$\\$ > escaped.pid; exec sleep 300\" & sleep 0.5; exit 0' TERM\n\
         echo ready\n\
         while :; do sleep 0.1; done\n",
    );
    sb.config("[[worker]]\nname = \"esc\"\ncommand = [\"./escape.sh\"]\n");
    let mut run = sb.spawn(&["run"]);
    run.wait_for("| ready", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let escaped = read_pid(&sb, "escaped.pid");
    assert_all_die(
        &[escaped],
        "a process that left its worker's session",
        "agentsup",
    );
}

#[test]
fn check_names_hostile_secret_files_without_hanging() {
    let sb = Sandbox::new();
    let secrets = sb.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    nix::unistd::mkfifo(
        &secrets.join("FIFO_KEY"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", secrets.join("ZERO_KEY")).unwrap();
    std::fs::write(secrets.join("BIG_KEY"), vec![b'x'; 20_000_000]).unwrap();
    std::fs::write(secrets.join("OK_KEY"), "fine-value-0123\n").unwrap();
    sb.config(
        "[[source]]\ntype = \"dir\"\npath = \"secrets\"\n\n\
         [[source]]\ntype = \"dir\"\npath = \"small\"\noptional = true\nmax_size = \"8\"\n\n\
         [[worker]]\nname = \"w\"\ncommand = [\"sleep\", \"1\"]\nkeys = [\"FIFO_KEY\", \"OK_KEY\"]\n",
    );
    let started = Instant::now();
    let out = sb.run(&["check"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "check took {:?}",
        started.elapsed()
    );
    // FIFO_KEY is declared: an error; the others only warnings.
    out.assert_code(78)
        .assert_contains("FIFO (named pipe)")
        .assert_contains("is a symlink to /dev/zero, outside the source's directory")
        .assert_contains("is 20000000 bytes, over the 64 KiB limit");
    let all = out.all();
    for key in ["FIFO_KEY", "ZERO_KEY", "BIG_KEY"] {
        assert!(
            all.contains(&format!("secrets/{key}")),
            "{key} not named:\n{all}"
        );
    }
    // The limit is the source's `max_size`.
    std::fs::create_dir(sb.path().join("small")).unwrap();
    std::fs::write(sb.path().join("small/SMALL_KEY"), "0123456789abcdef").unwrap();
    sb.run(&["check"])
        .assert_contains("small/SMALL_KEY")
        .assert_contains("is 16 bytes, over the 8 bytes limit");
}

#[test]
fn out_of_file_descriptors_is_a_message_naming_the_limit_and_sigterm_stops_cleanly() {
    let sb = Sandbox::new();
    sb.config(
        "[supervisor]\nshutdown_timeout = \"5s\"\n\n\
         [[worker]]\nname = \"s\"\ncommand = [\"sleep\", \"300\"]\nreplicas = 40\n\
         max_restarts = 0\nbackoff = { initial = \"200ms\", max = \"1s\" }\n",
    );
    let mut cmd = sb.cmd(&["run"]);
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's limit.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut run = sb.spawn_cmd(cmd);
    let line = run.wait_for("out of file descriptors", PATIENCE);
    assert!(line.contains("`ulimit -n`) is 64"), "{line}");
    let sleepers = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next().map(str::to_owned))
                    .and_then(|r| r.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(run.pid())
            })
            .collect()
    };
    let started = sleepers();
    assert!(!started.is_empty(), "some replicas should run");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    assert_all_die(&started, "a replica", "agentsup's stop");
    assert!(!run.output().contains("panicked"), "{}", run.output());
}

#[test]
fn a_full_disk_on_stdout_does_not_stop_the_run() {
    let sb = Sandbox::new();
    sb.config(
        "[supervisor]\nshutdown_timeout = \"3s\"\n\n[[worker]]\nname = \"p\"\n\
         command = [\"sh\", \"-c\", \"echo $$ > p.pid; while :; do echo hi; sleep 0.1; done\"]\n",
    );
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut cmd = sb.cmd(&["run"]);
    cmd.stdout(full).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The worker starts although the check report could not be written.
    let worker = read_pid(&sb, "p.pid");
    signal(child.id() as i32, 15);
    let mut status = None;
    wait_until(PATIENCE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        signal(-(child.id() as i32), 9);
    }
    let err = err.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    assert!(!alive(worker));
    assert!(err.contains("No space left on device"), "{err}");
}
