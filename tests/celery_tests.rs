//! Celery under agentsup, for real: a Celery 5.7 worker from the test venv, a real
//! `redis-server` as broker and result backend (started here on a free port), the
//! worker-side hook from `python/agentsup`, and the real openai SDK against the
//! demo's fake provider. The two deployments of docs/migrating.md:
//!
//! * Option A (Celery's prefork pool in one replica) with `stop_target = "leader"`:
//!   a SIGTERM during a 5 s task lets the task finish and store its result.
//! * Option B (one solo process per replica) with `agentsup.celery`: a task whose
//!   key is rejected stops the worker with 77; agentsup classifies it `auth`,
//!   re-reads, and restarts it with the rotated key, which then works.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

const TASKS: &str = r#"
import os, time
import openai
from celery import Celery
import agentsup.celery

app = Celery("tasks", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
agentsup.celery.exit_on_auth_error(app)

@app.task
def slow(seconds):
    print("task started", flush=True)
    time.sleep(seconds)
    return "slept %d" % seconds

@app.task
def ask(question):
    client = openai.OpenAI(max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    print("task answered", flush=True)
    return reply.choices[0].message.content
"#;

/// A child process killed when the test ends, however it ends.
struct Service(Child);

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

fn pythonpath(sb: &Sandbox) -> String {
    format!(
        "{}:{}",
        repo().join("python").display(),
        sb.path().display()
    )
}

/// `pool` is the end of the worker's argv, `extra` more `[[worker]]` lines; the
/// worker starts with `key`.
fn sandbox(
    venv: &Path,
    redis_port: u16,
    api_port: u16,
    key: &Canary,
    pool: &str,
    extra: &str,
) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("tasks.py", TASKS);
    sb.write(
        ".env",
        format!(
            "CELERY_BROKER_URL=redis://127.0.0.1:{redis_port}/0\n\
             CELERY_RESULT_BACKEND=redis://127.0.0.1:{redis_port}/1\n\
             OPENAI_BASE_URL=http://127.0.0.1:{api_port}/v1\n"
        ),
    );
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", key.value()));
    let celery: PathBuf = venv.to_path_buf();
    sb.config(&format!(
        r#"
[supervisor]
shutdown_timeout = "40s"

[[source]]
type = "dotenv"
path = ".env"

[[source]]
type = "dir"
path = "secrets"

[keys.CELERY_BROKER_URL]
secret = false
[keys.CELERY_RESULT_BACKEND]
secret = false

[[worker]]
name = "celery"
keys = ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "OPENAI_API_KEY", "OPENAI_BASE_URL"]
vars = {{ PYTHONPATH = "{pythonpath}" }}
stop_timeout = "30s"
backoff = {{ initial = "200ms", max = "1s", jitter = 0.0 }}
command = ["{celery}", "-m", "celery", "-A", "tasks", "worker", "--loglevel=INFO", {pool}]
{extra}
"#,
        pythonpath = pythonpath(&sb),
        celery = celery.display(),
    ));
    sb
}

#[test]
fn celery_option_a_warm_shutdown_with_stop_target_leader_stores_the_running_tasks_result() {
    let venv = test_venv_python();
    let (redis_port, api_port) = (free_port(), free_port());
    let _redis = redis(redis_port);
    let key = Canary::new("sk-proj-");
    let sb = sandbox(
        &venv,
        redis_port,
        api_port,
        &key,
        r#""--pool=prefork", "--concurrency=2""#,
        r#"stop_target = "leader""#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
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
    let sb = sandbox(
        &venv,
        redis_port,
        provider.port,
        &keys.old,
        r#""--pool=solo""#,
        "",
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
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
