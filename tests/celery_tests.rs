//! Celery under agentsup, for real, as `examples/celery/` ships it: that directory's
//! `tasks.py`, `worker.py` and configs, run unchanged, with a Celery 5.7 worker from
//! the test venv, a real `redis-server` as broker and result backend (started here
//! on a free port), the worker-side hook from `python/agentsup`, and the real openai
//! SDK against the demo's fake provider. The two deployments of docs/migrating.md:
//!
//! * Option A (Celery's prefork pool in one replica) with `stop_target = "leader"`:
//!   a SIGTERM during a 5 s task lets the task finish and store its result.
//! * Option B (one solo process per replica) with `agentsup.celery`: a task whose
//!   key is rejected stops the worker with 77; agentsup classifies it `auth`,
//!   re-reads, and restarts it with the rotated key, which then works.

use crate::support::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A child process killed when the test ends, however it ends.
pub(crate) struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(port: u16) -> Service {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (tests/setup-deps.sh installs it)");
    let up = wait_until(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "redis-server did not listen on {port}");
    Service(child)
}

/// Runs `code` with the venv's python, the tasks module importable; returns stdout.
fn client(sb: &Sandbox, venv: &Path, redis_port: u16, code: &str) -> String {
    let out = Command::new(venv)
        .args(["-c", code])
        .current_dir(sb.path())
        .env("PYTHONPATH", pythonpath(sb))
        .env(
            "CELERY_BROKER_URL",
            format!("redis://127.0.0.1:{redis_port}/0"),
        )
        .env(
            "CELERY_RESULT_BACKEND",
            format!("redis://127.0.0.1:{redis_port}/1"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run the Celery client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) fn pythonpath(sb: &Sandbox) -> String {
    format!(
        "{}:{}",
        repo().join("python").display(),
        sb.path().display()
    )
}

/// A copy of `examples/celery` with `config` (one of its TOML files) as
/// `supervisor.toml`, a `.env` pointing at this test's Redis and provider, and the
/// worker's first key (`key`) in `secrets/`. Nothing of the example is edited: the agentsup package
/// comes from `PYTHONPATH` and `python3` from the venv, both through agentsup's own
/// environment, which the example's `[env] inherit` passes on.
fn sandbox(redis_port: u16, api_port: u16, key: &Canary, config: &str) -> Sandbox {
    let sb = Sandbox::new();
    let example = repo().join("examples/celery");
    for file in ["tasks.py", "worker.py"] {
        sb.write(file, std::fs::read(example.join(file)).expect(file));
    }
    sb.config(&std::fs::read_to_string(example.join(config)).expect(config));
    sb.write(
        ".env",
        format!(
            "CELERY_BROKER_URL=redis://127.0.0.1:{redis_port}/0\n\
             CELERY_RESULT_BACKEND=redis://127.0.0.1:{redis_port}/1\n\
             OPENAI_BASE_URL=http://127.0.0.1:{api_port}/v1\n"
        ),
    );
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", key.value()));
    sb
}

/// `agentsup run` in `sb` with the venv first on PATH and the worker-side package
/// importable.
fn run_supervisor(sb: &Sandbox, venv: &Path) -> Running {
    let bin_dir = venv.parent().expect("venv bin dir");
    let mut c = sb.cmd(&["run", "--no-color"]);
    c.env(
        "PATH",
        format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("PYTHONPATH", pythonpath(sb));
    sb.spawn_cmd(c)
}

#[test]
fn celery_option_a_warm_shutdown_with_stop_target_leader_stores_the_running_tasks_result() {
    let venv = test_venv_python();
    let (redis_port, api_port) = (free_port(), free_port());
    let _redis = redis(redis_port);
    let key = Canary::new("sk-proj-");
    let sb = sandbox(redis_port, api_port, &key, "option-a.toml");
    let mut run = run_supervisor(&sb, &venv);
    run.wait_for("ready.", WAIT);
    let id = client(
        &sb,
        &venv,
        redis_port,
        "from tasks import slow; print(slow.delay(5).id)",
    );
    run.wait_for("task started", WAIT);
    run.signal(15);
    assert_eq!(run.wait_exit(WAIT), Some(0), "{}", run.output());
    let result = client(
        &sb,
        &venv,
        redis_port,
        &format!("from tasks import app; print(app.AsyncResult({id:?}).get(timeout=10))"),
    );
    assert_eq!(result, "slept 5", "{}", run.output());
    assert!(
        !run.output().contains("WorkerLostError"),
        "{}",
        run.output()
    );
    key.assert_absent(&run);
}

#[test]
fn celery_option_b_auth_failure_exits_77_then_the_rotated_key_is_used() {
    let venv = test_venv_python();
    let redis_port = free_port();
    let _redis = redis(redis_port);
    let keys = RotationKeys::new();
    let provider = FakeProvider::openai_accepting(keys.new.value());
    let sb = sandbox(redis_port, provider.port, &keys.old, "supervisor.toml");
    let mut run = run_supervisor(&sb, &venv);
    run.wait_for("ready.", WAIT);
    client(
        &sb,
        &venv,
        redis_port,
        "from tasks import ask; ask.delay('ping')",
    );
    let line = run.wait_for("class auth", WAIT);
    assert!(line.contains("status 77"), "{line}");
    run.wait_for("its keys are unchanged", WAIT);
    // Rotate: the secret directory now holds the key the provider accepts.
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.new.value()));
    run.wait_for("OPENAI_API_KEY changed", WAIT);
    // Both replicas restart on the new key: the one waiting on the rejected key at
    // once, the other by the rolling restart. A task sent before the second is
    // back could still reach it on the old key while it warm-shuts down (seen on
    // a loaded machine: "received" 0.2 s after "Warm shutdown") and fail with 401
    // as the first did.
    run.wait_for_all(
        &[
            "celery.0: starting -> running",
            "celery.1: starting -> running",
        ],
        WAIT,
    );
    client(
        &sb,
        &venv,
        redis_port,
        "from tasks import ask; ask.delay('ping again')",
    );
    run.wait_for("task answered", WAIT);
    run.signal(15);
    assert_eq!(run.wait_exit(WAIT), Some(0), "{}", run.output());
    keys.assert_absent(&run);
    keys.assert_absent(&("the fake provider's log", provider.log()));
}
