//! `agentsup env WORKER`: exactly the SPEC 3 environment, with provenance, masked.

use crate::support::*;

/// Two fresh keys: OPENAI_API_KEY (in `.env`) and ANTHROPIC_API_KEY (in `secrets/`).
fn two_keys() -> (Canary, Canary) {
    (Canary::new("sk-"), Canary::new("sk-ant-"))
}

fn sandbox_with_twenty_undeclared(key_a: &Canary, key_b: &Canary) -> Sandbox {
    let sb = Sandbox::new();
    let mut dotenv = String::from("# twenty undeclared values and one declared\n");
    for i in 0..10 {
        dotenv.push_str(&format!("UNDECLARED_DOTENV_{i}=dotenv-value-{i}\n"));
    }
    dotenv.push_str(&key_a.dotenv("OPENAI_API_KEY"));
    sb.write(".env", dotenv);
    for i in 0..10 {
        sb.write(
            &format!("secrets/UNDECLARED_DIR_{i}"),
            format!("dir-value-{i}\n"),
        );
    }
    sb.write("secrets/ANTHROPIC_API_KEY", format!("{}\n", key_b.value()));
    sb.config(
        r#"
[env]
inherit = ["PATH", "LANG"]
vars = { LOG_LEVEL = "info" }

[[source]]
type = "dotenv"
path = ".env"

[[source]]
type = "dir"
path = "secrets"

[[source]]
type = "env"

[[worker]]
name = "planner"
command = ["python3", "-c", "pass"]
replicas = 3
keys = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]
vars = { MODEL = "gpt-4o-mini" }
"#,
    );
    sb
}

fn undeclared_process_env() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..20)
        .map(|i| (format!("UNDECLARED_PROC_{i}"), format!("proc-value-{i}")))
        .collect();
    v.push(("LANG".into(), "C.UTF-8".into()));
    v.push(("HOME_SECRET_TOKEN".into(), "tok-should-not-pass".into()));
    v
}

#[test]
fn env_json_holds_exactly_the_declared_environment() {
    let (key_a, key_b) = two_keys();
    let sb = sandbox_with_twenty_undeclared(&key_a, &key_b);
    let extra = undeclared_process_env();
    let extra_ref: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let out = sb.run_env(&["env", "planner", "--format", "json"], &extra_ref);
    out.assert_code(0)
        .assert_no_leak(&key_a)
        .assert_no_leak(&key_b);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let obj = doc.as_object().unwrap();
    let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "AGENTSUP_REPLICA",
            "AGENTSUP_REPLICAS",
            "AGENTSUP_WORKER",
            "ANTHROPIC_API_KEY",
            "LANG",
            "LOG_LEVEL",
            "MODEL",
            "OPENAI_API_KEY",
            "PATH",
            "PYTHONUNBUFFERED",
            "PYTHON_DOTENV_DISABLED",
        ]
    );
    let src = |k: &str| obj[k]["source"].as_str().unwrap().to_string();
    assert_eq!(src("OPENAI_API_KEY"), ".env:12");
    assert!(
        src("ANTHROPIC_API_KEY").ends_with("secrets/ANTHROPIC_API_KEY"),
        "{}",
        src("ANTHROPIC_API_KEY")
    );
    assert_eq!(src("PATH"), "process env");
    assert_eq!(src("LANG"), "process env");
    assert_eq!(src("LOG_LEVEL"), "[env] vars");
    assert_eq!(src("MODEL"), "worker vars");
    assert_eq!(src("AGENTSUP_WORKER"), "agentsup");
    assert_eq!(src("PYTHON_DOTENV_DISABLED"), "agentsup");
    assert_eq!(obj["AGENTSUP_WORKER"]["value"], "planner");
    assert_eq!(obj["AGENTSUP_REPLICA"]["value"], "0");
    assert_eq!(obj["AGENTSUP_REPLICAS"]["value"], "3");
    assert_eq!(obj["PYTHONUNBUFFERED"]["value"], "1");
    assert_eq!(obj["OPENAI_API_KEY"]["secret"], true);
    assert_eq!(obj["ANTHROPIC_API_KEY"]["secret"], true);
    assert_eq!(obj["MODEL"]["secret"], false);
    // The masked form: 4 characters each end and the length, never more.
    let a = key_a.value();
    assert_eq!(
        obj["OPENAI_API_KEY"]["value"],
        format!("{}…{} ({} chars)", &a[..4], &a[a.len() - 4..], a.len())
    );
}

#[test]
fn env_reveal_prints_values_and_text_shows_provenance() {
    let (key_a, key_b) = two_keys();
    let sb = sandbox_with_twenty_undeclared(&key_a, &key_b);
    let out = sb.run(&["env", "planner", "--reveal", "--format", "json"]);
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["OPENAI_API_KEY"]["value"], key_a.value());
    let text = sb.run(&["env", "planner"]);
    text.assert_code(0)
        .assert_no_leak(&key_a)
        .assert_contains("OPENAI_API_KEY")
        .assert_contains(".env:12")
        .assert_contains("PYTHON_DOTENV_DISABLED")
        .assert_contains("--reveal");
    let dotenv = sb.run(&["env", "planner", "--format", "dotenv"]);
    dotenv
        .assert_code(0)
        .assert_no_leak(&key_a)
        .assert_contains("MODEL=gpt-4o-mini");
}

#[test]
fn env_unknown_worker_is_a_usage_error() {
    let (key_a, key_b) = two_keys();
    let sb = sandbox_with_twenty_undeclared(&key_a, &key_b);
    sb.run(&["env", "planer"])
        .assert_code(2)
        .assert_contains("unknown worker \"planer\"")
        .assert_contains("did you mean \"planner\"");
}

#[test]
fn config_lookup_uses_agentsup_config_then_flag() {
    let (key_a, key_b) = two_keys();
    let sb = sandbox_with_twenty_undeclared(&key_a, &key_b);
    std::fs::create_dir(sb.path().join("elsewhere")).unwrap();
    let mut c = sb.cmd(&["env", "planner", "--format", "json"]);
    c.current_dir(sb.path().join("elsewhere"))
        .env("AGENTSUP_CONFIG", sb.path().join("supervisor.toml"));
    sb.run_cmd(c).assert_code(0);
    let mut c = sb.cmd(&["check"]);
    c.current_dir(sb.path().join("elsewhere"));
    sb.run_cmd(c)
        .assert_code(78)
        .assert_contains("supervisor.toml");
}

#[test]
fn file_indirection_reads_the_named_file() {
    let sb = Sandbox::new();
    let key = Canary::new("sk-");
    sb.write("keyfile", format!("{}\n", key.value()));
    sb.config(
        r#"
[[worker]]
name = "w"
command = ["true"]
keys = ["OPENAI_API_KEY"]
"#,
    );
    let key_file = sb.path().join("keyfile");
    let out = sb.run_env(
        &["env", "w", "--format", "json", "--reveal"],
        &[("OPENAI_API_KEY_FILE", key_file.to_str().unwrap())],
    );
    out.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["OPENAI_API_KEY"]["value"], key.value());
    assert!(
        doc["OPENAI_API_KEY"]["source"]
            .as_str()
            .unwrap()
            .contains("via OPENAI_API_KEY_FILE")
    );
    assert!(doc.get("OPENAI_API_KEY_FILE").is_none());
}

#[test]
fn env_shows_tidy_provenance_paths_and_accepts_no_color() {
    // A config one directory down that reaches a sibling's secrets through `..`.
    let sb = Sandbox::new();
    let key = Canary::new("sk-");
    sb.write("shared/secrets/OPENAI_API_KEY", key.value());
    sb.write(
        "app/supervisor.toml",
        r#"
[[source]]
type = "dir"
path = "../shared/secrets"

[[worker]]
name = "w"
command = ["sh", "-c", "exec sleep 1"]
keys = ["OPENAI_API_KEY"]
"#,
    );
    let out = sb.run(&["env", "-c", "app/supervisor.toml", "w", "--no-color"]);
    out.assert_code(0).assert_no_leak(&key);
    assert!(
        out.stdout.contains("shared/secrets/OPENAI_API_KEY"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("/../"), "{}", out.stdout);
}
