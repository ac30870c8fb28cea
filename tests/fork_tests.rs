//! Fork mode (SPEC 6).
//!
//! Most tests drive [`agentsup::fork::ForkTemplate`] directly, with the real reaper
//! and spawner. Only one reaper may exist per process (it reaps every child and
//! makes the process a subreaper), and this test binary runs tests as threads of one
//! process, so each such test re-runs itself alone in a fresh copy of the binary
//! ([`isolated`]). The `fork_run_*` tests go through `agentsup run`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentsup::auth::Termination;
use agentsup::env::BuiltEnv;
use agentsup::fork::{ForkError, ForkExitError, ForkTemplate, Forked, TemplateOptions};
use agentsup::plan::Plan;
use agentsup::process::{Spawner, kill_group};
use agentsup::reaper::Reaper;
use agentsup::secret::{Provenance, Sensitive};
use agentsup::sources::{Entry, ProcessEnv, Snapshot};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::support::*;

const MARKER: &str = "AGENTSUP_FORK_TEST";

/// Runs `body` in a fresh process of this test binary that runs only the test
/// `name` (a test in this module), and fails if that process fails.
fn isolated(name: &str, body: impl FnOnce()) {
    let path = format!("fork_tests::{name}");
    if std::env::var(MARKER).as_deref() == Ok(path.as_str()) {
        body();
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([path.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(MARKER, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid, 9);
            panic!("isolated test {path} hung");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "isolated test {path} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// A sandbox, a plan for one fork-mode worker, the reaper and the spawner.
struct Ctx {
    sb: Sandbox,
    plan: Plan,
    spawner: Spawner,
    snapshot: Snapshot,
    process_env: ProcessEnv,
}

impl Ctx {
    /// `worker` is the body of a `[[worker]]` named `w` after `start = "fork"`;
    /// `{python}` in it is replaced by the real interpreter.
    fn new(files: &[(&str, &str)], worker: &str, secrets: &[(&str, &str)]) -> Ctx {
        // Before the reaper starts: `python()` waits on a child of its own.
        let python = python();
        let sb = Sandbox::new();
        for (name, content) in files {
            sb.write(name, content);
        }
        let toml = format!(
            "[env]\ninherit = [\"PATH\", \"HOME\"]\nvars = {{ LOG_LEVEL = \"info\" }}\n\
             [[worker]]\nname = \"w\"\nstart = \"fork\"\npython = \"{python}\"\n{worker}"
        );
        let path = sb.config(&toml);
        let plan = Plan::load(&path).unwrap();
        let mut snapshot = Snapshot::default();
        for (name, value) in secrets {
            snapshot.values.insert(
                name.to_string(),
                Entry {
                    name: name.to_string(),
                    value: Sensitive::new(*value),
                    provenance: Provenance::SecretFile {
                        path: sb.path().join("secrets").join(name),
                    },
                    source_index: 0,
                    quote: None,
                    notes: Vec::new(),
                },
            );
        }
        let process_env = ProcessEnv::from_pairs([
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", sb.path().display().to_string()),
            ("UNDECLARED_SECRET", "must-never-arrive".to_string()),
        ]);
        let reaper = Reaper::start().unwrap();
        let spawner = Spawner::start(reaper).unwrap();
        Ctx {
            sb,
            plan,
            spawner,
            snapshot,
            process_env,
        }
    }

    fn env(&self, replica: u32) -> BuiltEnv {
        agentsup::env::build(
            &self.plan,
            &self.plan.workers[0],
            replica,
            &self.snapshot,
            &self.process_env,
        )
    }

    async fn template(&self) -> Result<ForkTemplate, ForkError> {
        ForkTemplate::start_with(
            &self.plan.workers[0],
            &self.env(0),
            &self.spawner,
            None,
            TemplateOptions {
                backoff_initial: Duration::from_millis(50),
                ..TemplateOptions::default()
            },
        )
        .await
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Reads a replica's stdout and stderr to the end and waits for its exit.
async fn finish(mut f: Forked) -> (String, String, Result<Termination, ForkExitError>) {
    let mut out = String::new();
    let mut err = String::new();
    let (mut o, mut e) = (f.stdout.take().unwrap(), f.stderr.take().unwrap());
    let (a, b) = tokio::join!(o.read_to_string(&mut out), e.read_to_string(&mut err));
    a.unwrap();
    b.unwrap();
    let status = tokio::time::timeout(PATIENCE, f.exit)
        .await
        .expect("exit reported")
        .map(|s| s.termination);
    (out, err, status)
}

/// Waits for a stdout line starting with `prefix` and returns the rest of it.
async fn line_after(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::pipe::Receiver>>,
    prefix: &str,
) -> String {
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
        panic!("stdout ended before a line starting with {prefix:?}");
    })
    .await
    .expect("line within PATIENCE")
}

/// The NUL-separated environment the kernel recorded for `pid` at exec time.
fn proc_environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Fields after `(comm)` in `/proc/<pid>/stat`: state, ppid, pgrp, session, …
fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').map(str::to_owned).collect()
}

fn dead(pid: u32) -> bool {
    !alive(pid as i32)
}

const KEY: &str = "sk-proj-FORKforkFORKforkFORKforkFORKforkFORKfork12";
const ROTATED: &str = "sk-proj-ROTATEDrotatedROTATEDrotatedROTATEDrota34";

const DUMP_ENV: &str = r#"
import json, os
with open("env-%s.json" % os.environ["AGENTSUP_REPLICA"], "w") as f:
    json.dump(dict(os.environ), f)
print("dumped", flush=True)
"#;

#[test]
fn replicas_each_see_exactly_their_environment() {
    isolated("replicas_each_see_exactly_their_environment", || {
        let ctx = Ctx::new(
            &[("dump_env.py", DUMP_ENV)],
            "script = \"dump_env.py\"\npreload = [\"json\"]\nreplicas = 4\n\
             keys = [\"OPENAI_API_KEY\", \"MODEL\"]\nvars = { ROLE = \"planner\" }\n",
            &[("OPENAI_API_KEY", KEY), ("MODEL", "gpt-4o-mini")],
        );
        block_on(async {
            let template = ctx.template().await.unwrap();
            // All four at once: requests interleave on one socket.
            let mut tasks = Vec::new();
            for r in 0..4 {
                let (t, env) = (template.clone(), ctx.env(r).pairs());
                tasks.push(tokio::spawn(async move {
                    finish(t.fork(env).await.unwrap()).await
                }));
            }
            for task in tasks {
                let (out, err, status) = task.await.unwrap();
                assert_eq!(status, Ok(Termination::Exited(0)), "{err}");
                assert_eq!(out, "dumped\n");
            }
            for r in 0..4 {
                let got: BTreeMap<String, String> = serde_json::from_str(
                    &std::fs::read_to_string(ctx.sb.path().join(format!("env-{r}.json"))).unwrap(),
                )
                .unwrap();
                let want: BTreeMap<String, String> = ctx.env(r).pairs().into_iter().collect();
                assert_eq!(got, want, "replica {r}");
                assert_eq!(got["OPENAI_API_KEY"], KEY);
                assert!(!got.contains_key("UNDECLARED_SECRET"));
            }
        });
    });
}

#[test]
fn template_environment_holds_no_secret() {
    isolated("template_environment_holds_no_secret", || {
        let key = Canary::new("sk-proj-");
        let langsmith = Canary::new("lsv2-");
        let ctx = Ctx::new(
            &[("dump_env.py", DUMP_ENV)],
            "script = \"dump_env.py\"\nkeys = [\"OPENAI_API_KEY\", \"LANGSMITH_*\"]\n\
             vars = { OPENAI_API_KEY_FILE = \"/run/secrets/OPENAI_API_KEY\" }\n",
            &[
                ("OPENAI_API_KEY", key.value()),
                ("LANGSMITH_API_KEY", langsmith.value()),
            ],
        );
        block_on(async {
            let template = ctx.template().await.unwrap();
            let pid = template.pid().unwrap();
            let environ = proc_environ(pid);
            let names: Vec<&str> = environ
                .iter()
                .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
                .collect();
            for (kv, name) in environ.iter().zip(&names) {
                let surface = (format!("the template's {name}"), kv.as_str());
                key.assert_absent(&surface);
                langsmith.assert_absent(&surface);
            }
            for gone in [
                "OPENAI_API_KEY",
                "LANGSMITH_API_KEY",
                "OPENAI_API_KEY_FILE",
                "AGENTSUP_REPLICA",
                "UNDECLARED_SECRET",
            ] {
                assert!(!names.contains(&gone), "{gone} in {names:?}");
            }
            for kept in ["PATH", "LOG_LEVEL", "AGENTSUP_WORKER", "PYTHONUNBUFFERED"] {
                assert!(names.contains(&kept), "{kept} missing from {names:?}");
            }
            // The template is agentsup's child, in its own process group.
            let stat = proc_stat(pid);
            assert_eq!(stat[1], std::process::id().to_string());
            assert_eq!(stat[2], pid.to_string());
        });
    });
}

const FAKE_SDK: &str = r#"
"""Behaves like openai-python's client constructor."""
import os

class OpenAIError(Exception):
    pass

class OpenAI:
    def __init__(self, api_key=None):
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise OpenAIError(
                "The api_key client option must be set either by passing api_key "
                "to the client or by setting the OPENAI_API_KEY environment variable"
            )
        self.api_key = api_key
"#;

#[test]
fn import_time_code_sees_no_key_and_run_time_code_does() {
    isolated(
        "import_time_code_sees_no_key_and_run_time_code_does",
        || {
            let ctx = Ctx::new(
                &[
                    ("fakesdk.py", FAKE_SDK),
                    (
                        "settings.py",
                        "import os\nKEY_AT_IMPORT = os.environ.get(\"OPENAI_API_KEY\")\n",
                    ),
                    (
                        "agent.py",
                        "import fakesdk, settings\n\
                     print('import-time key:', settings.KEY_AT_IMPORT, flush=True)\n\
                     client = fakesdk.OpenAI()\n\
                     print('run-time key length:', len(client.api_key), flush=True)\n",
                    ),
                ],
                "module = \"agent\"\npreload = [\"fakesdk\", \"settings\"]\nkeys = [\"OPENAI_API_KEY\"]\n",
                &[("OPENAI_API_KEY", KEY)],
            );
            block_on(async {
                let template = ctx.template().await.unwrap();
                let (out, err, status) =
                    finish(template.fork(ctx.env(0).pairs()).await.unwrap()).await;
                assert_eq!(status, Ok(Termination::Exited(0)), "{err}");
                assert_eq!(
                    out,
                    format!(
                        "import-time key: None\nrun-time key length: {}\n",
                        KEY.len()
                    )
                );
            });
        },
    );
}

#[test]
fn a_preloaded_import_time_client_fails_loudly() {
    isolated("a_preloaded_import_time_client_fails_loudly", || {
        let key = Canary::new("sk-proj-");
        let ctx = Ctx::new(
            &[
                ("fakesdk.py", FAKE_SDK),
                (
                    "shared_client.py",
                    "import fakesdk\nclient = fakesdk.OpenAI()\n",
                ),
                ("agent.py", "import shared_client\n"),
            ],
            "module = \"agent\"\npreload = [\"fakesdk\", \"shared_client\"]\nkeys = [\"OPENAI_API_KEY\"]\n",
            &[("OPENAI_API_KEY", key.value())],
        );
        block_on(async {
            let err = ctx.template().await.unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, ForkError::Preload { module, .. } if module == "shared_client"),
                "{text}"
            );
            assert!(text.contains("Traceback (most recent call last)"), "{text}");
            assert!(text.contains("shared_client.py\", line 2"), "{text}");
            assert!(
                text.contains("The api_key client option must be set"),
                "{text}"
            );
            // Python's import machinery and the template's own frames are noise.
            assert!(
                !text.contains("importlib") && !text.contains("fork_template"),
                "{text}"
            );
            key.assert_absent(&text);
        });
    });
}

#[test]
fn preload_failure_names_the_module_and_shows_its_redacted_traceback() {
    isolated(
        "preload_failure_names_the_module_and_shows_its_redacted_traceback",
        || {
            let leaked = Canary::new("tok-");
            let ctx = Ctx::new(
                &[(
                    "leaky.py",
                    // A raw literal: the canary's backslash stays one.
                    &format!(
                        "raise RuntimeError(r'cannot connect with {}')\n",
                        leaked.value()
                    ),
                )],
                "module = \"agent\"\npreload = [\"json\", \"leaky\"]\n",
                &[],
            );
            agentsup::redact::global()
                .extend([("LEAKY_TOKEN".to_string(), Sensitive::new(leaked.value()))]);
            block_on(async {
                let err = ctx.template().await.unwrap_err();
                let text = err.to_string();
                assert!(text.contains("preload module \"leaky\""), "{text}");
                assert!(
                    text.contains("RuntimeError: cannot connect with [redacted:LEAKY_TOKEN]"),
                    "{text}"
                );
                leaked.assert_absent(&text);

                // A module that does not exist at all.
                let ctx2 = Ctx::new(
                    &[],
                    "module = \"agent\"\npreload = [\"no_such_module_xyz\"]\n",
                    &[],
                );
                let err = ctx2.template().await.unwrap_err();
                assert!(
                    matches!(&err, ForkError::Preload { module, traceback }
                        if module == "no_such_module_xyz" && traceback == "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
                    "{err}"
                );
            });
        },
    );
}

const MODES: &str = r#"
import os, sys
mode = os.environ["MODE"]
print("argv", sys.argv[1:], "cwd", os.getcwd(), flush=True)
if mode == "ok":
    pass
elif mode == "code":
    sys.exit(3)
elif mode == "message":
    sys.exit("goodbye from the worker")
elif mode == "raise":
    def inner():
        raise ValueError("boom")
    inner()
elif mode == "kill":
    os.kill(os.getpid(), 9)
elif mode == "interrupt":
    raise KeyboardInterrupt
elif mode == "atexit":
    import atexit
    atexit.register(lambda: print("atexit ran", flush=True))
"#;

#[test]
fn exit_statuses_are_reported_as_python_would_exit() {
    isolated("exit_statuses_are_reported_as_python_would_exit", || {
        let ctx = Ctx::new(
            &[("work/modes.py", MODES)],
            "cwd = \"work\"\nscript = \"modes.py\"\nargs = [\"--flag\", \"two words\"]\n",
            &[],
        );
        block_on(async {
            let template = ctx.template().await.unwrap();
            let cwd = ctx.sb.path().join("work").canonicalize().unwrap();
            for (mode, want) in [
                ("ok", Termination::Exited(0)),
                ("code", Termination::Exited(3)),
                ("message", Termination::Exited(1)),
                ("raise", Termination::Exited(1)),
                ("kill", Termination::Signaled(9)),
                ("interrupt", Termination::Signaled(2)),
                ("atexit", Termination::Exited(0)),
            ] {
                let mut env = ctx.env(0).pairs();
                env.push(("MODE".into(), mode.into()));
                let (out, err, status) = finish(template.fork(env).await.unwrap()).await;
                assert_eq!(status, Ok(want), "mode {mode}: {err}");
                assert!(
                    out.starts_with(&format!(
                        "argv ['--flag', 'two words'] cwd {}\n",
                        cwd.display()
                    )),
                    "{out}"
                );
                match mode {
                    "message" => assert_eq!(err, "goodbye from the worker\n"),
                    "raise" => {
                        assert!(
                            err.starts_with("Traceback (most recent call last):\n"),
                            "{err}"
                        );
                        assert!(err.contains("modes.py\", line 14, in <module>"), "{err}");
                        assert!(err.contains("modes.py\", line 13, in inner"), "{err}");
                        assert!(err.ends_with("ValueError: boom\n"), "{err}");
                        // Python would not show its runpy frames, nor ours.
                        assert!(
                            !err.contains("runpy") && !err.contains("fork_template"),
                            "{err}"
                        );
                    }
                    "interrupt" => assert!(err.contains("KeyboardInterrupt"), "{err}"),
                    "atexit" => assert!(out.ends_with("atexit ran\n"), "{out}"),
                    _ => assert_eq!(err, "", "mode {mode}"),
                }
            }
        });
    });
}

const SLEEPER: &str = r#"
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
print("grandchild", child.pid, flush=True)
print("stdin", os.readlink("/proc/self/fd/0"), flush=True)
print("ready", flush=True)
time.sleep(300)
"#;

#[test]
fn a_replica_is_its_own_session_and_stopping_its_group_leaves_nothing() {
    isolated(
        "a_replica_is_its_own_session_and_stopping_its_group_leaves_nothing",
        || {
            let ctx = Ctx::new(&[("sleeper.py", SLEEPER)], "script = \"sleeper.py\"\n", &[]);
            block_on(async {
                let template = ctx.template().await.unwrap();
                let tpid = template.pid().unwrap();
                let mut f = template.fork(ctx.env(0).pairs()).await.unwrap();
                let mut lines = BufReader::new(f.stdout.take().unwrap()).lines();
                let grandchild: u32 = line_after(&mut lines, "grandchild").await.parse().unwrap();
                assert_eq!(line_after(&mut lines, "stdin").await, "/dev/null");
                line_after(&mut lines, "ready").await;

                let stat = proc_stat(f.pid);
                assert_eq!(stat[1], tpid.to_string(), "parent is the template");
                assert_eq!(stat[2], f.pid.to_string(), "own process group");
                assert_eq!(stat[3], f.pid.to_string(), "own session");
                assert_eq!(proc_stat(grandchild)[2], f.pid.to_string());

                // What the dispatcher does to stop a replica.
                kill_group(f.pid, libc::SIGTERM).unwrap();
                let status = tokio::time::timeout(PATIENCE, f.exit).await.unwrap();
                assert_eq!(
                    status.unwrap().termination,
                    Termination::Signaled(libc::SIGTERM)
                );
                assert!(
                    wait_until(PATIENCE, || dead(grandchild)),
                    "grandchild survived"
                );

                // A replica still running when the template is shut down dies too.
                let mut f = template.fork(ctx.env(0).pairs()).await.unwrap();
                let mut lines = BufReader::new(f.stdout.take().unwrap()).lines();
                let grandchild: u32 = line_after(&mut lines, "grandchild").await.parse().unwrap();
                line_after(&mut lines, "ready").await;
                template.shutdown(Duration::from_secs(10)).await;
                assert!(wait_until(PATIENCE, || dead(tpid)), "template survived");
                assert!(wait_until(PATIENCE, || dead(f.pid)), "replica survived");
                assert!(
                    wait_until(PATIENCE, || dead(grandchild)),
                    "grandchild survived"
                );
                let status = tokio::time::timeout(PATIENCE, f.exit).await.unwrap();
                assert!(
                    matches!(
                        status,
                        Ok(s) if s.termination == Termination::Signaled(libc::SIGKILL)
                    ) || status.is_err(),
                    "{status:?}"
                );
                assert!(matches!(
                    template.fork(ctx.env(0).pairs()).await,
                    Err(ForkError::Closed)
                ));
                assert!(no_children_left(), "a process outlived the template");
            });
        },
    );
}

/// True when no process has this test process as its parent (zombies aside: the
/// reaper collects them).
fn no_children_left() -> bool {
    let me = std::process::id().to_string();
    wait_until(PATIENCE, || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != std::process::id())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .all(|stat| {
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                let mut f = rest.split(' ');
                let state = f.next();
                f.next() != Some(me.as_str()) || state == Some("Z")
            })
    })
}

#[test]
fn template_death_kills_its_replicas_reports_them_crashed_and_restarts() {
    isolated(
        "template_death_kills_its_replicas_reports_them_crashed_and_restarts",
        || {
            let ctx = Ctx::new(&[("sleeper.py", SLEEPER)], "script = \"sleeper.py\"\n", &[]);
            block_on(async {
                let template = ctx.template().await.unwrap();
                let old = template.pid().unwrap();
                let mut f = template.fork(ctx.env(0).pairs()).await.unwrap();
                let mut lines = BufReader::new(f.stdout.take().unwrap()).lines();
                let grandchild: u32 = line_after(&mut lines, "grandchild").await.parse().unwrap();
                line_after(&mut lines, "ready").await;

                kill_group(old, libc::SIGKILL).unwrap();
                let started = Instant::now();
                let status = tokio::time::timeout(PATIENCE, f.exit)
                    .await
                    .expect("not hung");
                assert_eq!(status, Err(ForkExitError::TemplateDied(f.pid)));
                assert!(started.elapsed() < Duration::from_secs(10));
                assert!(wait_until(PATIENCE, || dead(f.pid)), "replica survived");
                assert!(
                    wait_until(PATIENCE, || dead(grandchild)),
                    "grandchild survived"
                );

                // The next fork runs on a new template.
                let f = template.fork(ctx.env(0).pairs()).await.unwrap();
                let new = template.pid().unwrap();
                assert_ne!(new, old);
                assert_eq!(proc_stat(f.pid)[1], new.to_string());
                assert_eq!(template.starts(), 2);
                drop(template);
                // The last handle gone: template and replica are killed.
                assert!(wait_until(PATIENCE, || dead(new) && dead(f.pid)));
            });
        },
    );
}

#[test]
fn restarts_fork_again_without_reimporting_and_pick_up_rotated_keys() {
    isolated(
        "restarts_fork_again_without_reimporting_and_pick_up_rotated_keys",
        || {
            let mut ctx = Ctx::new(
                &[
                    (
                        "counted.py",
                        "with open('imports.log', 'a') as f:\n    f.write('imported\\n')\n",
                    ),
                    (
                        "agent.py",
                        "import os\nprint(os.environ['OPENAI_API_KEY'][-2:], flush=True)\n",
                    ),
                ],
                "module = \"agent\"\npreload = [\"counted\"]\nkeys = [\"OPENAI_API_KEY\"]\n",
                &[("OPENAI_API_KEY", KEY)],
            );
            block_on(async {
                let template = ctx.template().await.unwrap();
                let pid = template.pid();
                let (out, _, _) = finish(template.fork(ctx.env(0).pairs()).await.unwrap()).await;
                assert_eq!(out, "12\n");
                // Rotation: the sources now hold a new key; the template stays.
                ctx.snapshot.values.get_mut("OPENAI_API_KEY").unwrap().value =
                    Sensitive::new(ROTATED);
                for _ in 0..2 {
                    let (out, _, status) =
                        finish(template.fork(ctx.env(0).pairs()).await.unwrap()).await;
                    assert_eq!(status, Ok(Termination::Exited(0)));
                    assert_eq!(out, "34\n");
                }
                assert_eq!(template.pid(), pid);
                assert_eq!(template.starts(), 1);
                let log = std::fs::read_to_string(ctx.sb.path().join("imports.log")).unwrap();
                assert_eq!(log, "imported\n");
            });
        },
    );
}

#[test]
fn a_bad_cwd_is_a_fork_error_not_a_hang() {
    isolated("a_bad_cwd_is_a_fork_error_not_a_hang", || {
        let ctx = Ctx::new(
            &[("w/agent.py", "print('hi')\n")],
            "cwd = \"w\"\nmodule = \"agent\"\n",
            &[],
        );
        block_on(async {
            let template = ctx.template().await.unwrap();
            std::fs::remove_dir_all(ctx.sb.path().join("w")).unwrap();
            let err = template.fork(ctx.env(0).pairs()).await.unwrap_err();
            assert!(matches!(err, ForkError::ForkFailed(_)), "{err}");
            assert!(err.to_string().contains("FileNotFoundError"), "{err}");
            // The template itself is fine.
            assert_eq!(template.starts(), 1);
        });
    });
}

// ---------------------------------------------------------------------------
// Through `agentsup run`: these need fork mode wired into the supervisor.

fn fork_auth_sandbox(keys: &RotationKeys) -> Sandbox {
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
start = "fork"
python = "{}"
preload = ["json"]
script = "{}"
keys = ["OPENAI_API_KEY"]
vars = {{ GOOD_KEY_FILE = "{}" }}
backoff = {{ initial = "200ms", max = "2s", multiplier = 2.0, jitter = 0.0 }}
auth = {{ max_delay = "1s" }}
"#,
        python(),
        fixture("openai_auth.py"),
        sb.path().join("good_key").display()
    ));
    sb
}

#[test]
fn fork_run_auth_failure_is_classified_and_rotation_recovers() {
    let keys = RotationKeys::new();
    let sb = fork_auth_sandbox(&keys);
    let out = assert_auth_failure_then_rotation_recovers(&sb, &keys);
    // One template served every run: preloading happened once.
    assert_eq!(out.matches("fork template ready").count(), 1, "{out}");
}

#[test]
fn fork_run_replicas_get_exactly_their_environment_and_stop_cleanly() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-proj-");
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", key.value()));
    sb.write(
        "dump_env.py",
        format!("{DUMP_ENV}\nimport time\ntime.sleep(300)\n"),
    );
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH"]

[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "forkdump"
start = "fork"
python = "{}"
script = "dump_env.py"
replicas = 2
keys = ["OPENAI_API_KEY"]
"#,
        python()
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for_all(&["forkdump.0 | dumped", "forkdump.1 | dumped"], PATIENCE);
    for r in 0..2 {
        let got: BTreeMap<String, String> = serde_json::from_str(
            &std::fs::read_to_string(sb.path().join(format!("env-{r}.json"))).unwrap(),
        )
        .unwrap();
        let names: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "AGENTSUP_REPLICA",
                "AGENTSUP_REPLICAS",
                "AGENTSUP_WORKER",
                "OPENAI_API_KEY",
                "PATH",
                "PYTHONUNBUFFERED",
                "PYTHON_DOTENV_DISABLED"
            ]
        );
        assert_eq!(got["OPENAI_API_KEY"], key.value());
        assert_eq!(got["AGENTSUP_REPLICA"], r.to_string());
    }
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    key.assert_absent(&run);
    key.assert_not_in_sandbox(&sb, &["env-0.json", "env-1.json"]);
    // Nothing it started (template, replicas) is left.
    assert!(
        wait_until(PATIENCE, || processes_of_worker("forkdump").is_empty()),
        "left behind: {:?}",
        processes_of_worker("forkdump")
    );
}

#[test]
fn fork_run_preload_failure_stops_before_anything_starts() {
    let sb = Sandbox::new();
    sb.write("agent.py", "open('started', 'w').close()\n");
    sb.config(&format!(
        r#"
[[worker]]
name = "w"
start = "fork"
python = "{}"
preload = ["no_such_module_for_agentsup"]
module = "agent"
"#,
        python()
    ));
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(78)
        .assert_contains("no_such_module_for_agentsup")
        .assert_contains("ModuleNotFoundError");
    assert!(!sb.path().join("started").exists());
}

/// Live processes started for worker `worker`: every one carries
/// `AGENTSUP_WORKER=<worker>` in the environment the kernel recorded at exec
/// (a forked replica shows its template's).
fn processes_of_worker(worker: &str) -> Vec<u32> {
    let marker = format!("AGENTSUP_WORKER={worker}");
    let mut found = Vec::new();
    for pid in std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()) && alive(pid as i32) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn fork_run_sigkilled_agentsup_leaves_nothing_alive() {
    let sb = Sandbox::new();
    sb.write(
        "sleeper.py",
        "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(300)\n",
    );
    sb.config(&format!(
        r#"
[[worker]]
name = "forkkill"
start = "fork"
python = "{}"
script = "sleeper.py"
replicas = 3
"#,
        python()
    ));
    let run = sb.spawn(&["run", "--no-color"]);
    let pids = run.announced_pids(3, "| pid ");
    signal(run.pid(), 9);
    // The template dies with agentsup (PDEATHSIG), the replicas with the template.
    assert_all_die(&pids, "replica", "a SIGKILLed agentsup");
    assert!(
        wait_until(PATIENCE, || processes_of_worker("forkkill").is_empty()),
        "left behind: {:?}",
        processes_of_worker("forkkill")
    );
}
