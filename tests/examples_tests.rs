//! The examples that documentation quotes run as written: their files are copied
//! unchanged into a sandbox and run by the real binary (examples/celery has its
//! own file, celery_tests.rs).

use crate::celery_tests::pythonpath;
use crate::support::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// The fenced block of `doc` that starts right after the line `first`.
fn block_after(doc: &str, first: &str) -> String {
    let at = doc
        .find(first)
        .unwrap_or_else(|| panic!("{first:?} not in the doc"));
    let rest = &doc[at + first.len()..];
    rest[..rest.find("```").expect("a closing fence")].to_string()
}

#[test]
fn multiprocessing_example_is_the_docs_code_and_runs_as_written() {
    let example = repo().join("examples/multiprocessing");
    let doc = std::fs::read_to_string(repo().join("docs/migrating.md")).unwrap();
    let planner = std::fs::read_to_string(example.join("agents/planner.py")).unwrap();
    let config = std::fs::read_to_string(example.join("supervisor.toml")).unwrap();
    assert!(
        planner.ends_with(&block_after(&doc, "# agents/planner.py\n")),
        "examples/multiprocessing/agents/planner.py differs from docs/migrating.md"
    );
    let worker_block = block_after(&doc, "```toml\n[[worker]]\nname = \"planner\"\n");
    assert!(
        config.contains(&format!("[[worker]]\nname = \"planner\"\n{worker_block}")),
        "examples/multiprocessing/supervisor.toml's worker differs from docs/migrating.md"
    );

    let venv = test_venv_python();
    let key = Canary::new("sk-proj-");
    let provider = FakeProvider::openai_accepting(key.value());
    let sb = Sandbox::new();
    sb.write("agents/__init__.py", "");
    sb.write("agents/planner.py", &planner);
    sb.config(&config);
    // The provider accepts `key`; the worker gets it from .env.
    sb.write(
        ".env",
        format!(
            "{}OPENAI_BASE_URL={}\n",
            key.dotenv("OPENAI_API_KEY"),
            provider.base_url()
        ),
    );
    let mut c = sb.cmd(&["run", "--no-color"]);
    c.env(
        "PATH",
        format!(
            "{}:{}",
            venv.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("PYTHONPATH", pythonpath(&sb));
    let mut run = sb.spawn_cmd(c);
    // Each of the 4 replicas answers its one question and exits 0; then agentsup
    // has nothing left to supervise and exits 0 by itself.
    assert_eq!(run.wait_exit(WAIT), Some(0), "{}", run.output());
    let out = run.output();
    for q in ["process group?", "SIGTERM mean?", "reap zombies?", "PID 1?"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("planner.") && l.contains(q) && l.contains(" -> ")),
            "no answer to {q:?}:\n{out}"
        );
    }
    key.assert_absent(&run);
}

/// Issue 11: src/'s top-level modules import each other without a cycle, and
/// nothing but the binary imports `cli` (scripts/module-cycles.py says how).
#[test]
fn the_module_graph_has_no_cycles_and_nothing_imports_cli() {
    let out = std::process::Command::new(python())
        .arg(repo().join("scripts/module-cycles.py"))
        .arg(repo().join("src"))
        .output()
        .expect("run scripts/module-cycles.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("no cycles among"), "{text}");
}
