//! `agentsup env WORKER`: exactly the SPEC 3 environment, with provenance, masked.

use crate::support::*;

const KEY_A: &str = "sk-envtestAAAAbbbbCCCCddddEEEEffffGGGGhhhhIIII";
const KEY_B: &str = "sk-ant-envtestZZZZyyyyXXXXwwwwVVVVuuuuTTTT";

fn sandbox_with_twenty_undeclared() -> Sandbox {
    let sb = Sandbox::new();
    let mut dotenv = String::from("# twenty undeclared values and one declared\n");
    for i in 0..10 {
        dotenv.push_str(&format!("UNDECLARED_DOTENV_{i}=dotenv-value-{i}\n"));
    }
    dotenv.push_str(&format!("OPENAI_API_KEY={KEY_A}\n"));
    sb.write(".env", dotenv);
    for i in 0..10 {
        sb.write(
            &format!("secrets/UNDECLARED_DIR_{i}"),
            format!("dir-value-{i}\n"),
        );
    }
    sb.write("secrets/ANTHROPIC_API_KEY", format!("{KEY_B}\n"));
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
    let sb = sandbox_with_twenty_undeclared();
    let extra = undeclared_process_env();
    let extra_ref: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let out = sb.run_env(&["env", "planner", "--format", "json"], &extra_ref);
    out.assert_code(0)
        .assert_no_leak(KEY_A)
        .assert_no_leak(KEY_B);
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
    assert_eq!(obj["OPENAI_API_KEY"]["value"], "sk-e…IIII (46 chars)");
}

#[test]
fn env_reveal_prints_values_and_text_shows_provenance() {
    let sb = sandbox_with_twenty_undeclared();
    let out = sb.run(&["env", "planner", "--reveal", "--format", "json"]);
    out.assert_code(0).assert_contains(KEY_A);
    let text = sb.run(&["env", "planner"]);
    text.assert_code(0)
        .assert_no_leak(KEY_A)
        .assert_contains("OPENAI_API_KEY")
        .assert_contains(".env:12")
        .assert_contains("PYTHON_DOTENV_DISABLED")
        .assert_contains("--reveal");
    let dotenv = sb.run(&["env", "planner", "--format", "dotenv"]);
    dotenv
        .assert_code(0)
        .assert_no_leak(KEY_A)
        .assert_contains("MODEL=gpt-4o-mini");
}

#[test]
fn env_unknown_worker_is_a_usage_error() {
    let sb = sandbox_with_twenty_undeclared();
    sb.run(&["env", "planer"])
        .assert_code(2)
        .assert_contains("unknown worker \"planer\"")
        .assert_contains("did you mean \"planner\"");
}

#[test]
fn config_lookup_uses_agentsup_config_then_flag() {
    let sb = sandbox_with_twenty_undeclared();
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
    sb.write("keyfile", format!("{KEY_A}\n"));
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
    assert_eq!(doc["OPENAI_API_KEY"]["value"], KEY_A);
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
    sb.write("shared/secrets/OPENAI_API_KEY", FAKE_OPENAI_KEY);
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
    out.assert_code(0).assert_no_leak(FAKE_OPENAI_KEY);
    assert!(
        out.stdout.contains("shared/secrets/OPENAI_API_KEY"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("/../"), "{}", out.stdout);
}
