//! Unit tests of the orchestration: which value each worker gets, merging,
//! ordering, Azure and worker `.env` checks, rendering. The per-value rules are
//! tested in `rules.rs`, name matching in `names.rs`.

use std::path::{Path, PathBuf};

use super::*;
use crate::secret::{Provenance, Sensitive};
use crate::sources::dotenv::{Quote, RecordNote};
use crate::sources::{Entry, SourceStatus};

const KEY: &str = "sk-Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVwXyA1b2";

fn plan_at(dir: &Path, text: &str) -> Plan {
    Plan::from_text(&dir.join("supervisor.toml"), text).unwrap()
}

fn plan(text: &str) -> Plan {
    plan_at(Path::new("/nonexistent/agentsup-check"), text)
}

fn dotenv(name: &str, value: &str, line: usize) -> Entry {
    Entry {
        name: name.into(),
        value: Sensitive::new(value),
        provenance: Provenance::Dotenv {
            path: PathBuf::from(".env"),
            line,
        },
        source_index: 0,
        quote: Some(Quote::None),
        notes: Vec::new(),
    }
}

fn snapshot(entries: Vec<Entry>) -> Snapshot {
    let mut s = Snapshot::default();
    s.summaries.push(SourceSummary {
        index: 0,
        description: "dotenv .env".into(),
        status: SourceStatus::Loaded(entries.len()),
    });
    for e in entries {
        s.values.insert(e.name.clone(), e);
    }
    s
}

/// `check::run` for `workers` (all when empty), their environments built as the
/// validation pipeline builds them.
fn run_for(p: &Plan, s: &Snapshot, penv: &ProcessEnv, workers: &[WorkerPlan]) -> Report {
    run(p, s, penv, &crate::env::for_workers(p, workers, s, penv))
}

fn check(p: &Plan, s: &Snapshot) -> Report {
    run_for(p, s, &ProcessEnv::default(), &[])
}

fn all_text(r: &Report) -> String {
    format!("{}\n{}", r.render_text(false), r.render_json())
}

#[test]
fn the_open_ai_near_miss() {
    let p =
        plan("[[worker]]\nname = \"planner\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n");
    let s = snapshot(vec![dotenv("OPEN_AI_API_KEY", KEY, 2)]);
    let r = check(&p, &s);
    assert!(r.has_errors());
    assert_eq!(r.errors(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(f.code, "missing");
    assert_eq!(f.workers, ["planner"]);
    assert_eq!(
        f.hint.as_deref(),
        Some("did you mean OPEN_AI_API_KEY at .env:2? rename it to OPENAI_API_KEY")
    );
    let text = all_text(&r);
    assert!(!text.contains(KEY));
    assert!(
        text.contains("error    OPENAI_API_KEY  (worker planner)"),
        "{text}"
    );
}

#[test]
fn healthy_config_is_ok() {
    let p = plan(
        "[[worker]]\nname = \"planner\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\", \"MODEL\"]\n",
    );
    let s = snapshot(vec![
        dotenv("OPENAI_API_KEY", KEY, 1),
        dotenv("MODEL", "gpt-4o-mini", 2),
    ]);
    let r = check(&p, &s);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let text = r.render_text(false);
    assert!(
        text.contains("0 errors, 0 warnings; 2 keys checked for 1 worker"),
        "{text}"
    );
    assert!(text.contains("\nok: "), "{text}");
    assert!(!text.contains('\u{1b}'));
    assert!(r.render_text(true).contains('\u{1b}'));
}

#[test]
fn shared_findings_name_every_worker_once() {
    let p = plan(
        "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n\
         [[worker]]\nname = \"b\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\"]\n",
    );
    let s = snapshot(vec![dotenv("OPENAI_API_KEY", "changeme", 1)]);
    let r = check(&p, &s);
    let codes: Vec<(&str, &str, Vec<String>)> = r
        .findings
        .iter()
        .map(|f| (f.code, f.key.as_deref().unwrap(), f.workers.clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (
                "placeholder",
                "OPENAI_API_KEY",
                vec!["a".to_string(), "b".to_string()]
            ),
            ("missing", "ANTHROPIC_API_KEY", vec!["b".to_string()]),
        ]
    );
    assert!(r.render_text(false).contains("(workers a, b)"));
}

#[test]
fn selection_limits_the_check() {
    let p = plan(
        "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n\
         [[worker]]\nname = \"b\"\ncommand = [\"x\"]\nkeys = [\"ANTHROPIC_API_KEY\"]\n",
    );
    let s = snapshot(vec![dotenv("OPENAI_API_KEY", KEY, 1)]);
    let r = run_for(
        &p,
        &s,
        &ProcessEnv::default(),
        std::slice::from_ref(&p.workers[0]),
    );
    assert!(!r.has_errors(), "{:?}", r.findings);
    assert_eq!(r.workers.len(), 1);
    assert!(check(&p, &s).has_errors());
}

#[test]
fn worker_vars_override_what_is_checked() {
    // The worker gets its own `vars` value, so that is what is checked and located.
    let p = plan(
        "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\nvars = { OPENAI_API_KEY = \"sk-...\" }\n",
    );
    let s = snapshot(vec![dotenv("OPENAI_API_KEY", KEY, 1)]);
    let r = check(&p, &s);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].code, "placeholder");
    assert_eq!(r.findings[0].location.as_deref(), Some("worker vars"));
}

#[test]
fn source_problems_are_findings_grouped_with_their_key() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n");
    let mut s = snapshot(vec![]);
    s.problems.push(SourceProblem {
        severity: Severity::Warning,
        location: "other.env:1".into(),
        key: None,
        message: "file starts with a UTF-8 byte-order mark (BOM)".into(),
    });
    s.problems.push(SourceProblem {
        severity: Severity::Error,
        location: ".env:3".into(),
        key: Some("OPENAI_API_KEY".into()),
        message: "unterminated double quote".into(),
    });
    let r = check(&p, &s);
    let got: Vec<(&str, Severity)> = r.findings.iter().map(|f| (f.code, f.severity)).collect();
    assert_eq!(
        got,
        vec![
            ("bom", Severity::Warning),
            ("source", Severity::Error),
            ("missing", Severity::Error)
        ]
    );
    assert_eq!(r.findings[1].workers, ["a"]);
    assert!(
        r.findings[2]
            .hint
            .as_deref()
            .unwrap()
            .contains("at .env:3 could not be loaded")
    );
}

#[test]
fn sdk_name_warning() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_KEY\"]\n");
    let s = snapshot(vec![dotenv("OPENAI_KEY", KEY, 1)]);
    let r = check(&p, &s);
    assert_eq!(r.errors(), 0);
    assert_eq!(r.findings[0].code, "near-miss");
    assert!(
        r.findings[0]
            .message
            .contains("the openai SDK reads OPENAI_API_KEY")
    );
    assert_eq!(r.findings[0].location.as_deref(), Some(".env:1"));
}

#[test]
fn missing_declared_name_points_at_the_sdk_name() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_KEY\"]\n");
    let s = snapshot(vec![dotenv("OPENAI_API_KEY", KEY, 4)]);
    let r = check(&p, &s);
    let missing = r.findings.iter().find(|f| f.code == "missing").unwrap();
    assert!(
        missing
            .hint
            .as_deref()
            .unwrap()
            .contains("the sources have OPENAI_API_KEY at .env:4, the name the SDK reads"),
        "{missing:?}"
    );
}

#[test]
fn missing_declared_name_and_a_variant_in_the_source() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_KEY\"]\n");
    let s = snapshot(vec![dotenv("OPEN_AI_API_KEY", KEY, 2)]);
    let r = check(&p, &s);
    let missing = r.findings.iter().find(|f| f.code == "missing").unwrap();
    assert_eq!(
        missing.hint.as_deref(),
        Some(
            "the sources have OPEN_AI_API_KEY at .env:2; the SDK reads OPENAI_API_KEY: rename it to \
             OPENAI_API_KEY and declare OPENAI_API_KEY in the worker's `keys` instead of OPENAI_KEY"
        )
    );
}

#[test]
fn process_env_without_env_source() {
    let p = plan(
        "[[source]]\ntype = \"dotenv\"\npath = \".env\"\noptional = true\n\
         [[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n",
    );
    let penv = ProcessEnv::from_pairs([("OPENAI_API_KEY", KEY)]);
    let r = run_for(&p, &snapshot(vec![]), &penv, &[]);
    assert!(
        r.findings[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("no [[source]] has type = \"env\"")
    );
    assert!(!all_text(&r).contains(KEY));
}

#[test]
fn azure_needs_endpoint_and_version() {
    let p =
        plan("[[worker]]\nname = \"az\"\ncommand = [\"x\"]\nkeys = [\"AZURE_OPENAI_API_KEY\"]\n");
    let s = snapshot(vec![
        dotenv(
            "AZURE_OPENAI_API_KEY",
            "0123456789abcdef0123456789abcdef",
            1,
        ),
        dotenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com", 2),
    ]);
    let r = check(&p, &s);
    let codes: Vec<&str> = r.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, ["azure-endpoint", "azure-api-version"]);
    assert!(
        r.findings[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("is set at .env:2, but worker az does not declare it")
    );

    let p = plan(
        "[[worker]]\nname = \"az\"\ncommand = [\"x\"]\nkeys = [\"AZURE_OPENAI_API_KEY\", \"AZURE_OPENAI_ENDPOINT\"]\n\
         vars = { OPENAI_API_VERSION = \"2024-10-21\" }\n",
    );
    assert!(check(&p, &s).findings.is_empty());

    let s = snapshot(vec![
        dotenv(
            "AZURE_OPENAI_API_KEY",
            "0123456789abcdef0123456789abcdef",
            1,
        ),
        dotenv("AZURE_OPENAI_ENDPOINT", "http://res.openai.azure.com", 2),
    ]);
    let r = check(&p, &s);
    assert_eq!(r.findings[0].code, "azure-endpoint");
    assert!(r.findings[0].message.contains("not an https:// URL"));
    assert_eq!(r.findings[0].location.as_deref(), Some(".env:2"));
}

#[test]
fn openai_key_against_azure_base_url() {
    let p = plan(
        "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\", \"OPENAI_BASE_URL\"]\n",
    );
    let s = snapshot(vec![
        dotenv("OPENAI_API_KEY", KEY, 1),
        dotenv(
            "OPENAI_BASE_URL",
            "https://res.openai.azure.com/openai/deployments/x",
            2,
        ),
    ]);
    let r = check(&p, &s);
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].code, "provider-mismatch");
    assert!(!all_text(&r).contains("res.openai.azure.com"));
}

#[test]
fn overridden_value_is_mentioned() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n");
    let mut s = snapshot(vec![]);
    s.overridden.push(dotenv("OPENAI_API_KEY", KEY, 1));
    s.values.insert(
        "OPENAI_API_KEY".into(),
        Entry {
            name: "OPENAI_API_KEY".into(),
            value: Sensitive::new(""),
            provenance: Provenance::ProcessEnv,
            source_index: 1,
            quote: None,
            notes: Vec::new(),
        },
    );
    let r = check(&p, &s);
    assert_eq!(r.findings[0].code, "empty");
    assert!(
        r.findings[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("the value from process env overrides the one at .env:1")
    );
}

#[test]
fn dotenv_notes_reach_findings() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"DB_PASSWORD\"]\n");
    let mut e = dotenv("DB_PASSWORD", "pa$w#rd", 3);
    e.notes = vec![RecordNote::UnquotedHash, RecordNote::ContainsDollar];
    let r = check(&p, &snapshot(vec![e]));
    let codes: Vec<&str> = r.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, ["unquoted-hash", "dollar"]);
    assert!(!r.has_errors());
    assert!(r.render_text(false).contains("ok: nothing blocks"));
}

#[test]
fn worker_dotenv_warning() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("agents")).unwrap();
    std::fs::write(t.path().join("agents/.env"), "X=1\n").unwrap();
    std::fs::write(t.path().join(".env"), "X=1\n").unwrap();
    let p = plan_at(
        t.path(),
        "[[worker]]\nname = \"w\"\ncommand = [\"x\"]\ncwd = \"agents\"\n\
         [[worker]]\nname = \"root\"\ncommand = [\"x\"]\n",
    );
    let r = check(&p, &snapshot(vec![]));
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.code, f.severity), ("worker-dotenv", Severity::Warning));
    assert_eq!(f.location.as_deref(), Some("agents/.env"));
    assert!(
        f.hint
            .as_deref()
            .unwrap()
            .contains("PYTHON_DOTENV_DISABLED=1")
    );

    let p = plan_at(
        t.path(),
        "[env]\nworker_dotenv = true\n[[worker]]\nname = \"w\"\ncommand = [\"x\"]\ncwd = \"agents\"\n",
    );
    let r = check(&p, &snapshot(vec![]));
    assert!(
        r.findings[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("worker_dotenv = true")
    );
}

#[test]
fn json_shape() {
    let p =
        plan("[[worker]]\nname = \"planner\"\ncommand = [\"x\"]\nkeys = [\"OPENAI_API_KEY\"]\n");
    let r = check(
        &p,
        &snapshot(vec![dotenv("OPENAI_API_KEY", &format!("{KEY}\n"), 1)]),
    );
    let v: serde_json::Value = serde_json::from_str(&r.render_json()).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 0);
    assert_eq!(v["ok"], false);
    assert_eq!(v["sources"][0]["status"], "loaded");
    let f = &v["findings"][0];
    assert_eq!(f["severity"], "error");
    assert_eq!(f["code"], "whitespace");
    assert_eq!(f["key"], "OPENAI_API_KEY");
    assert_eq!(f["workers"][0], "planner");
    assert_eq!(f["location"], ".env:1");
    assert!(f["hint"].is_string());
    assert!(!r.render_json().contains(KEY));
}

#[test]
fn locations_to_files() {
    assert_eq!(location_file(".env:3"), ".env");
    assert_eq!(location_file("supervisor.toml:3:7"), "supervisor.toml");
    assert_eq!(location_file("/run/secrets/X"), "/run/secrets/X");
    assert_eq!(location_file("process env"), "process env");
}

#[test]
fn placeholders_in_any_declared_key_are_errors() {
    // SPEC 4: every declared exact key, not only credentials.
    let p = plan(
        "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"DATABASE_URL\", \"P2\", \"MODEL\"]\n",
    );
    let s = snapshot(vec![
        dotenv("DATABASE_URL", "changeme", 1),
        dotenv("P2", "<your key>", 2),
        dotenv("MODEL", "gpt-4o", 3),
    ]);
    let r = check(&p, &s);
    assert!(r.has_errors());
    let got: Vec<(&str, &str, Option<&str>)> = r
        .findings
        .iter()
        .map(|f| (f.code, f.key.as_deref().unwrap(), f.location.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("placeholder", "DATABASE_URL", Some(".env:1")),
            ("placeholder", "P2", Some(".env:2")),
        ]
    );
    assert!(!all_text(&r).contains("<your key>"), "{}", all_text(&r));
}

#[test]
fn a_value_no_exec_can_pass_is_an_error_naming_it() {
    // issue 13: a 2 MB declared secret used to crash-loop the worker on
    // "Argument list too long", naming no variable.
    let big = "A".repeat(2_000_000);
    let p = plan(
        "[[worker]]\nname = \"w\"\ncommand = [\"x\"]\nkeys = [\"BIG_TOKEN\", \"OPENAI_API_KEY\"]\n\
         [[worker]]\nname = \"f\"\nstart = \"fork\"\nscript = \"x.py\"\nkeys = [\"BIG_TOKEN\"]\n",
    );
    let s = snapshot(vec![
        dotenv("BIG_TOKEN", &big, 1),
        dotenv("OPENAI_API_KEY", KEY, 2),
    ]);
    let r = check(&p, &s);
    let too_long: Vec<&Finding> = r.findings.iter().filter(|f| f.code == "too-long").collect();
    assert_eq!(too_long.len(), 1, "{:?}", r.findings);
    let f = too_long[0];
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.key.as_deref(), Some("BIG_TOKEN"));
    assert_eq!(f.workers, ["w"], "fork-mode replicas are not exec'd");
    assert!(f.message.contains("2000000 bytes"), "{}", f.message);
    assert!(!all_text(&r).contains("AAAAAAAA"), "no value in the report");
    // A value just under the limit passes.
    let max = 32 * crate::procfs::page_size() as usize;
    let fits = "A".repeat(max - "BIG_TOKEN".len() - 2);
    let s = snapshot(vec![
        dotenv("BIG_TOKEN", &fits, 1),
        dotenv("OPENAI_API_KEY", KEY, 2),
    ]);
    assert!(!check(&p, &s).findings.iter().any(|f| f.code == "too-long"));
}
