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
    assert!(draft.workers[0].command.via_shell, "$PORT needs a shell");
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
fn plain_commands_are_argv_and_shell_lines_get_exec() {
    assert_eq!(
        command::from_shell_line("python3 -m app 'two words'").argv,
        ["python3", "-m", "app", "two words"]
    );
    let c = command::from_shell_line("FOO=1 node x.js");
    assert_eq!(c.argv, ["sh", "-c", "exec FOO=1 node x.js"]);
    let c = command::from_shell_line("a && b");
    assert!(c.via_shell);
    let (w, _) = from_command_line(&["python3", "-m", "agents.planner"].map(String::from));
    assert_eq!(w.name, "planner");
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
