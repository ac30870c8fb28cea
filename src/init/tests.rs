use std::path::PathBuf;

use super::*;

fn request(dir: &Path) -> InitRequest {
    InitRequest {
        dir: dir.to_path_buf(),
        secrets_dir: dir.join("no-such-secrets"),
        command: Vec::new(),
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn procfile_and_dotenv_give_workers_with_every_key_and_no_value() {
    let d = tmp();
    std::fs::write(
        d.path().join(".env"),
        "OPENAI_API_KEY=sk-proj-SecretValueSecretValue1234\nMODEL=gpt\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("Procfile"),
        "# agents\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\nplanner: python3 -m agents.planner\n",
    )
    .unwrap();
    let draft = discover(&request(d.path())).unwrap();
    assert_eq!(draft.workers.len(), 2);
    assert_eq!(
        draft.workers[1].command.argv,
        ["python3", "-m", "agents.planner"]
    );
    assert_eq!(
        draft.workers[0].command.shell,
        command::Shell::Exec,
        "$PORT needs a shell"
    );
    let text = draft.render();
    assert!(!text.contains("SecretValue"), "{text}");
    assert!(
        text.contains(r#"keys = ["OPENAI_API_KEY", "MODEL"]"#),
        "{text}"
    );
    let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(parsed["worker"].as_array().unwrap().len(), 2);
}

#[test]
fn supervisord_program_maps_fields_and_never_copies_a_secret() {
    let d = tmp();
    std::fs::write(
        d.path().join("supervisord.conf"),
        "[supervisord]\nnodaemon=true\n\n[program:summarizer]\ncommand=python3 summarize.py --fast ; inline comment\n\
         directory=%(here)s/agents\nnumprocs=3\nprocess_name=%(program_name)s_%(process_num)02d\nautorestart=true\n\
         stopsignal=INT\nstopwaitsecs=25\nuser=nobody\n\
         environment=MODEL=\"gpt-4o\",OPENAI_API_KEY=\"sk-proj-LiteralLiteralLiteral99\",LOG_LEVEL=debug\n",
    )
    .unwrap();
    let draft = discover(&request(d.path())).unwrap();
    let w = &draft.workers[0];
    assert_eq!(w.name, "summarizer");
    assert_eq!(w.command.argv, ["python3", "summarize.py", "--fast"]);
    assert_eq!(w.cwd.as_deref(), Some("agents"));
    assert_eq!(w.replicas, 3);
    assert_eq!(w.restart, Some("always"));
    assert_eq!(w.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(w.stop_timeout.as_deref(), Some("25s"));
    assert_eq!(w.user.as_deref(), Some("nobody"));
    assert_eq!(
        w.vars,
        [
            ("MODEL".to_string(), "gpt-4o".to_string()),
            ("LOG_LEVEL".into(), "debug".into())
        ]
    );
    assert_eq!(w.keys, ["OPENAI_API_KEY"]);
    let text = draft.render();
    assert!(!text.contains("Literal"), "{text}");
    assert_eq!(draft.shutdown_timeout.as_deref(), Some("35s"));
    toml::from_str::<toml::Value>(&text).expect("valid TOML");
}

#[test]
fn pm2_json_ecosystem() {
    let d = tmp();
    std::fs::write(
        d.path().join("ecosystem.json"),
        r#"{"apps":[{"name":"agent","script":"worker.mjs","instances":2,"kill_timeout":3000,
            "env":{"NODE_ENV":"production","DATABASE_URL":"postgres://app:pw@db/x"}},
           {"name":"py","script":"main.py","interpreter":"python3","args":["--once"],"autorestart":false}]}"#,
    )
    .unwrap();
    let draft = discover(&request(d.path())).unwrap();
    assert_eq!(draft.workers[0].command.argv, ["node", "worker.mjs"]);
    assert_eq!(draft.workers[0].replicas, 2);
    assert_eq!(draft.workers[0].stop_timeout.as_deref(), Some("3s"));
    assert_eq!(draft.workers[0].keys, ["DATABASE_URL"]);
    assert_eq!(
        draft.workers[1].command.argv,
        ["python3", "main.py", "--once"]
    );
    assert_eq!(draft.workers[1].restart, Some("never"));
    assert!(draft.secret_keys.contains(&"DATABASE_URL".to_string()));
    assert!(!draft.render().contains("pw@"));
}

#[test]
fn pm2_env_blocks_for_other_deployments_are_named_in_a_comment() {
    let d = tmp();
    std::fs::write(
        d.path().join("ecosystem.json"),
        r#"{"apps":[{"name":"agent","script":"worker.mjs","env":{"MODEL":"gpt"},
            "env_production":{"MODEL":"gpt-4o","OPENAI_API_KEY":"sk-proj-ProdOnlyProdOnlyProdOnly1"}}]}"#,
    )
    .unwrap();
    let draft = discover(&request(d.path())).unwrap();
    let text = draft.render();
    let notes: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        notes.contains("note: PM2's `env_production` (for `pm2 start --env production`) was not copied: MODEL, OPENAI_API_KEY;"),
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.chars().count() <= 80 || !l.starts_with('#')),
        "{text}"
    );
    assert!(
        !text.contains("ProdOnly") && !text.contains("gpt-4o"),
        "{text}"
    );
    assert_eq!(
        draft.workers[0].vars,
        [("MODEL".to_string(), "gpt".to_string())]
    );
}

#[test]
fn celery_command_line_becomes_one_solo_process_per_replica() {
    let argv: Vec<String> = [
        "celery",
        "-A",
        "proj",
        "worker",
        "--concurrency=4",
        "--loglevel=INFO",
    ]
    .map(String::from)
    .to_vec();
    let (w, shutdown) = from_command_line(&argv);
    assert_eq!(w.replicas, 4);
    assert_eq!(
        w.command.argv[2],
        "exec celery -A proj worker --loglevel=INFO --pool=solo -n celery-$AGENTSUP_REPLICA@%h"
    );
    assert_eq!(shutdown.as_deref(), Some("40s"));
    let (w, _) = from_command_line(
        &["celery", "-A", "p", "worker", "-c", "2", "-P", "prefork"].map(String::from),
    );
    assert_eq!(w.replicas, 2);
    assert!(!w.command.argv[2].contains("prefork"));
}

#[test]
fn plain_commands_are_argv_and_shell_lines_get_exec_only_when_simple() {
    use command::{Shell, from_shell_line};
    assert_eq!(
        from_shell_line("python3 -m app 'two words'").argv,
        ["python3", "-m", "app", "two words"]
    );
    assert_eq!(
        from_shell_line(r#"python3 -c "import os; print(1)""#).argv,
        ["python3", "-c", "import os; print(1)"],
        "a `;` inside quotes is not an operator"
    );
    assert_eq!(from_shell_line("exec node x.js").argv, ["node", "x.js"]);
    let body = |line: &str| {
        let c = from_shell_line(line);
        assert_eq!(c.argv[..2], ["sh", "-c"], "{line}");
        (c.argv[2].clone(), c.shell)
    };
    // One simple command: `exec`, after any assignments.
    for (line, want) in [
        (
            "gunicorn app:app --bind 0.0.0.0:$PORT",
            "exec gunicorn app:app --bind 0.0.0.0:$PORT",
        ),
        ("FOO=1 node x.js", "FOO=1 exec node x.js"),
        (
            "PORT=5000 A=\"b c\" python3 app.py",
            "PORT=5000 A=\"b c\" exec python3 app.py",
        ),
        ("exec node $X", "exec node $X"),
        (
            "python3 -c 'print(1); print(2)' $X",
            "exec python3 -c 'print(1); print(2)' $X",
        ),
    ] {
        assert_eq!(body(line), (want.to_string(), Shell::Exec));
    }
    // Several commands, a builtin, a substitution, a redirect: as written.
    for line in [
        "cd sub && python3 app.py",
        "echo migrating && python3 app.py",
        "python3 a.py; python3 b.py",
        "python3 app.py | tee log",
        "python3 app.py > log",
        "python3 app.py &",
        "python3 app.py --id $(hostname)",
        "python3 app.py --id `hostname`",
        "(cd sub; python3 app.py)",
        "export FOO=1",
        "FOO=1 cd sub",
        "ulimit -n 4096",
        "cd sub",
        "PORT=5000",
        "python3 'unbalanced",
    ] {
        assert_eq!(body(line), (line.to_string(), Shell::Stays));
    }
    let (w, _) = from_command_line(&["python3", "-m", "agents.planner"].map(String::from));
    assert_eq!(w.name, "planner");
}

/// `VAR=value exec cmd` relies on the shell exporting an assignment made before
/// the special builtin `exec` to the program: the system's `sh` (dash here, bash
/// elsewhere) must do so.
#[test]
fn an_assignment_before_exec_reaches_the_program() {
    let c = command::from_shell_line("AGENTSUP_T=5000 sh -c 'echo got=$AGENTSUP_T'");
    assert_eq!(c.shell, command::Shell::Exec);
    #[allow(clippy::disallowed_methods)] // the test's own child, waited on here
    let out = std::process::Command::new(&c.argv[0])
        .args(&c.argv[1..])
        .env_remove("AGENTSUP_T")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "got=5000");
}

#[test]
fn nothing_to_run_says_what_to_do() {
    let d = tmp();
    let err = discover(&request(d.path())).unwrap_err().to_string();
    assert!(err.contains("agentsup init -- "), "{err}");
}

#[test]
fn secret_directory_keys_are_declared() {
    let d = tmp();
    let secrets: PathBuf = d.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("ANTHROPIC_API_KEY"), "sk-ant-xxxxxxxxxxxxxxxx").unwrap();
    std::fs::write(secrets.join("..data"), "").unwrap();
    let mut req = request(d.path());
    req.secrets_dir = secrets;
    req.command = vec!["node".into(), "agent.mjs".into()];
    let draft = discover(&req).unwrap();
    assert_eq!(draft.secrets.as_ref().unwrap().1, ["ANTHROPIC_API_KEY"]);
    assert!(draft.render().contains(r#"keys = ["ANTHROPIC_API_KEY"]"#));
}

#[test]
fn pm2_js_ecosystem_is_evaluated_by_node() {
    let d = tmp();
    std::fs::write(
        d.path().join("ecosystem.config.js"),
        "const base = { instances: 3 };\nmodule.exports = {\n  apps: [{ ...base, name: 'agent', script: './worker.mjs', \
         args: '--queue fast', env: { OPENAI_API_KEY: 'sk-proj-FromPm2FromPm2FromPm2FromPm2' } }],\n};\n",
    )
    .unwrap();
    let draft = discover(&request(d.path())).unwrap();
    let w = &draft.workers[0];
    assert_eq!(w.command.argv, ["node", "./worker.mjs", "--queue", "fast"]);
    assert_eq!(w.replicas, 3);
    assert_eq!(w.keys, ["OPENAI_API_KEY"]);
    assert!(!draft.render().contains("FromPm2"));
}

/// Writes `draft`'s config into `dir`, loads it with the real config loader and runs
/// the real `check` (preflight included) on it; returns the text. Fails on a parse
/// error or any error finding.
fn assert_renders_and_checks(dir: &Path, draft: &Draft, env: &[(&str, &str)]) -> String {
    use crate::validate::{Scope, SpawnRunner, validate};
    let text = draft.render();
    // Comments are whole lines at column 0 that read at 80 columns; only the
    // items of a long list, one a line, are indented.
    for line in text.lines() {
        let list_item = line.starts_with("    \"") && line.ends_with("\",");
        assert!(
            list_item || !line.starts_with(char::is_whitespace),
            "{line:?}\n{text}"
        );
        if line.starts_with('#') {
            assert!(line.chars().count() <= 80, "{line:?}\n{text}");
        }
    }
    let path = dir.join("supervisor.toml");
    std::fs::write(&path, &text).unwrap();
    let plan = crate::plan::Plan::load(&path)
        .unwrap_or_else(|e| panic!("the drafted config does not load: {e}\n{text}"));
    let path_var = std::env::var("PATH").unwrap();
    let mut pairs = vec![("PATH", path_var.as_str())];
    pairs.extend_from_slice(env);
    let penv = crate::sources::ProcessEnv::from_pairs(pairs);
    let redactor = crate::redact::SharedRedactor::default();
    let scope = Scope {
        workers: &[],
        preflight: true,
        probe: None,
    };
    let v = validate(&plan, &penv, &SpawnRunner(None), &redactor, scope);
    assert!(
        !v.report.has_errors(),
        "check finds errors in the drafted config: {:#?}\n{text}",
        v.report.findings
    );
    text
}

#[test]
fn every_conversion_renders_a_config_that_loads_and_checks() {
    let key = ("OPENAI_API_KEY", "sk-proj-CheckCheckCheckCheckCheck1234");
    let broker = (
        "CELERY_BROKER_URL",
        "redis://:brokerpw1234@localhost:6379/0",
    );
    let backend = ("CELERY_RESULT_BACKEND", "redis://:backendpw123@localhost/1");

    // .env + Procfile, with plain lines and shell lines.
    let d = tmp();
    std::fs::write(
        d.path().join(".env"),
        format!(
            "{}={}\nMODEL=gpt\nDATABASE_URL=postgres://a:b@db/x\n",
            key.0, key.1
        ),
    )
    .unwrap();
    std::fs::write(
        d.path().join("Procfile"),
        "web: gunicorn app:app --bind 0.0.0.0:$PORT\nplanner: python3 -m agents.planner\n\
         env: PORT=5000 python3 app.py\nbg: cd sub && python3 app.py\n",
    )
    .unwrap();
    let text = assert_renders_and_checks(d.path(), &discover(&request(d.path())).unwrap(), &[]);
    assert!(text.contains("[keys.DATABASE_URL]"), "{text}");

    // supervisord
    let d = tmp();
    std::fs::create_dir(d.path().join("agents")).unwrap();
    std::fs::write(
        d.path().join("supervisord.conf"),
        "[program:summarizer]\ncommand=python3 summarize.py\ndirectory=%(here)s/agents\nnumprocs=2\n\
         stopsignal=INT\nstopwaitsecs=25\nenvironment=MODEL=\"gpt-4o\",OPENAI_API_KEY=\"sk-proj-x\"\n",
    )
    .unwrap();
    let draft = discover(&request(d.path())).unwrap();
    assert_renders_and_checks(d.path(), &draft, &[key]);

    // PM2, JSON and JavaScript
    for (file, body) in [
        (
            "ecosystem.json",
            r#"{"apps":[{"name":"agent","script":"worker.mjs","instances":2,
                "env":{"REDIS_URL":"redis://:pw@r/0"}}]}"#,
        ),
        (
            "ecosystem.config.js",
            "module.exports = { apps: [{ name: 'py', script: 'main.py', interpreter: 'python3' }] };",
        ),
    ] {
        let d = tmp();
        std::fs::write(d.path().join(file), body).unwrap();
        let draft = discover(&request(d.path())).unwrap();
        assert_renders_and_checks(d.path(), &draft, &[("REDIS_URL", "redis://:pw1234567@r/0")]);
    }

    // A command line: Celery (with its glob keys), and a plain one with a secret dir.
    let d = tmp();
    let mut req = request(d.path());
    req.command = ["celery", "-A", "proj", "worker", "--concurrency=4"]
        .map(String::from)
        .to_vec();
    let draft = discover(&req).unwrap();
    let text = assert_renders_and_checks(d.path(), &draft, &[broker, backend]);
    assert!(
        !text.contains("*]"),
        "a glob became a [keys] table:\n{text}"
    );
    assert!(
        text.contains("[keys.CELERY_RESULT_BACKEND]\nsecret = true"),
        "{text}"
    );
    // The rule reaches the variable the glob passes: its value is secret.
    let plan = crate::plan::Plan::load(&d.path().join("supervisor.toml")).unwrap();
    assert!(plan.is_secret("CELERY_RESULT_BACKEND", false));

    let d = tmp();
    let secrets = d.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(
        secrets.join("ANTHROPIC_API_KEY"),
        "sk-ant-api03-Q7m2Zr8vK1pX4nB6tY9wE3cJ5hL0sD",
    )
    .unwrap();
    let mut req = request(d.path());
    req.secrets_dir = secrets;
    req.command = vec!["node".into(), "agent.mjs".into()];
    assert_renders_and_checks(d.path(), &discover(&req).unwrap(), &[]);
}
