//! `agentsup init`: a config drafted from real files of each format, written, checked,
//! and then run as written (no edits), with no secret value copied into it.

use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A worker that prints its model and the length of its key, then sleeps.
const WORKER: &str = "import os, sys, time\n\
print('ready', os.environ['MODEL'], 'key length', len(os.environ['OPENAI_API_KEY']), flush=True)\n\
time.sleep(600)\n";

/// Runs `init_args`, then `run` on the config it wrote until `ready`; asserts
/// `key` is nowhere: not in init's output, the config, run's output or any file.
fn init_then_run(sb: &Sandbox, key: &Canary, init_args: &[&str], ready: &str) -> String {
    let out = sb.run(init_args);
    out.assert_code(0).assert_no_leak(key);
    assert!(out.stderr.contains("agentsup init: wrote"), "{}", out.all());
    let written = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    key.assert_absent(&("the written supervisor.toml", &written));
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for(ready, WAIT);
    run.signal(15);
    assert_eq!(run.wait_exit(WAIT), Some(0), "{}", run.output());
    key.assert_absent(&run);
    key.assert_not_in_sandbox(sb, &[]);
    written
}

/// Writes `.env` (a fresh OPENAI_API_KEY canary, returned, and MODEL) and the worker.
fn env_file(sb: &Sandbox) -> Canary {
    let key = Canary::new("sk-proj-");
    sb.write(
        ".env",
        format!("{}MODEL=gpt-4o-mini\n", key.dotenv("OPENAI_API_KEY")),
    );
    sb.write("worker.py", WORKER);
    key
}

#[test]
fn init_from_dotenv_and_procfile_runs_without_editing() {
    let sb = Sandbox::new();
    let key = env_file(&sb);
    sb.write("Procfile", "# one agent\nagent: python3 worker.py\n");
    let written = init_then_run(
        &sb,
        &key,
        &["init", "--secrets-dir", "none"],
        &format!("ready gpt-4o-mini key length {}", key.value().len()),
    );
    assert!(
        written.contains(r#"command = ["python3", "worker.py"]"#),
        "{written}"
    );
    // A second init refuses to overwrite, and says how to.
    let again = sb.run(&["init", "--secrets-dir", "none"]);
    again.assert_code(1).assert_contains("--force");
    sb.run(&["init", "--force", "--secrets-dir", "none"])
        .assert_code(0);
}

#[test]
fn init_from_a_supervisord_program_runs_without_editing() {
    let sb = Sandbox::new();
    let key = env_file(&sb);
    sb.write(
        "supervisord.conf",
        "[supervisord]\nnodaemon=true\n\n[program:agent]\ncommand=python3 worker.py ; the agent\n\
         numprocs=2\nautorestart=unexpected\nstopwaitsecs=5\nenvironment=LOG_LEVEL=\"debug\"\n",
    );
    let written = init_then_run(
        &sb,
        &key,
        &["init", "--secrets-dir", "none"],
        "ready gpt-4o-mini",
    );
    assert!(written.contains("replicas = 2"), "{written}");
    assert!(written.contains(r#"stop_timeout = "5s""#), "{written}");
}

#[test]
fn init_from_a_pm2_ecosystem_file_runs_without_editing() {
    let sb = Sandbox::new();
    let key = env_file(&sb);
    sb.write(
        "ecosystem.config.js",
        "module.exports = { apps: [{ name: 'agent', script: 'worker.py', interpreter: 'python3', \
         instances: 2, env: { LOG_LEVEL: 'info' } }] };\n",
    );
    let written = init_then_run(
        &sb,
        &key,
        &["init", "--secrets-dir", "none"],
        "ready gpt-4o-mini",
    );
    assert!(
        written.contains(r#"command = ["python3", "worker.py"]"#),
        "{written}"
    );
}

#[test]
fn init_with_a_command_and_an_empty_directory() {
    let sb = Sandbox::new();
    let empty = sb.run(&["init"]);
    empty.assert_code(1).assert_contains("agentsup init -- ");
    assert!(!sb.path().join("supervisor.toml").exists());
    let key = env_file(&sb);
    init_then_run(
        &sb,
        &key,
        &[
            "init",
            "--secrets-dir",
            "none",
            "--",
            "python3",
            "worker.py",
        ],
        "ready gpt-4o-mini",
    );
    // Run again with nothing to draft from: the existing file is what it says.
    let before = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    sb.run(&["init"])
        .assert_code(1)
        .assert_contains("supervisor.toml already exists");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap(),
        before
    );
}

#[test]
fn init_with_a_celery_command_in_an_empty_directory_writes_a_config_that_checks() {
    // The issue's own example: the broker URL (with a password) comes from
    // agentsup's environment, as in a container.
    let sb = Sandbox::new();
    let broker = Canary::alnum("pw");
    let url = format!("redis://:{}@localhost:6379/0", broker.value());
    let env = [("CELERY_BROKER_URL", url.as_str())];
    let args = [
        "init",
        "--secrets-dir",
        "none",
        "--",
        "celery",
        "-A",
        "proj",
        "worker",
        "--concurrency=4",
    ];
    let out = sb.run_env(&args, &env);
    out.assert_code(0).assert_no_leak(&broker);
    out.assert_contains("0 errors");
    let written = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    assert!(written.contains("replicas = 4"), "{written}");
    assert!(
        !written.contains("*]"),
        "a glob key became a table:\n{written}"
    );
    sb.run_env(&["check"], &env).assert_code(0);
}

#[test]
fn init_from_procfile_shell_lines_runs_each_as_the_line_says() {
    // Three Procfile forms that are common and need a shell: an assignment prefix,
    // a `cd` first, and a step before the program. Each worker must do its job:
    // get PORT, run in sub/, and run the program after the echo.
    let sb = Sandbox::new();
    let app = "import os, sys, time\n\
        print(sys.argv[1], 'up', 'port=%s' % os.environ.get('PORT'), \
        'cwd=%s' % os.path.basename(os.getcwd()), flush=True)\n\
        time.sleep(600)\n";
    sb.write("app.py", app);
    sb.write("sub/app.py", app);
    sb.write(
        "Procfile",
        "port: PORT=5000 python3 -u app.py port\n\
         insub: cd sub && python3 -u app.py insub\n\
         migrate: echo migrating && python3 -u app.py migrate\n",
    );
    sb.run(&["init", "--secrets-dir", "none"]).assert_code(0);
    let written = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    assert!(
        written.contains(r#""PORT=5000 exec python3 -u app.py port""#),
        "{written}"
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for_all(
        &[
            "port up port=5000",
            "insub up port=None cwd=sub",
            "migrating",
            "migrate up",
        ],
        WAIT,
    );
    run.signal(15);
    assert_eq!(run.wait_exit(WAIT), Some(0), "{}", run.output());
    let out = run.output();
    assert!(!out.contains("not found"), "{out}");
    assert!(!out.contains("backoff"), "{out}");
}

#[test]
fn an_empty_directory_points_at_init_within_80_columns() {
    let sb = Sandbox::new();
    for cmd in ["check", "run"] {
        let out = sb.run_env(&[cmd], &[("COLUMNS", "80")]);
        out.assert_code(78).assert_contains("`agentsup init`");
        out.assert_contains("no supervisor.toml here");
        // Within 80 columns, with the sandbox's path as short as docs' /srv/app.
        let path = sb.path().display().to_string();
        for line in out.stderr.lines() {
            let width = line.replace(&path, "/srv/app").chars().count();
            assert!(width <= 80, "{cmd}: {width} columns: {line:?}");
        }
    }
}
