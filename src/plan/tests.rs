//! Unit tests of config validation.
use super::*;
use crate::diag::Located;

fn plan(text: &str) -> Result<Plan, Vec<Located>> {
    Plan::from_text(Path::new("/tmp/x/supervisor.toml"), text).map_err(|e| match e {
        Error::Config(v) => v,
        other => panic!("{other}"),
    })
}

#[test]
fn defaults_apply() {
    let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\n").unwrap();
    assert_eq!(p.sources.len(), 2);
    let w = &p.workers[0];
    assert_eq!(w.replicas, 1);
    assert_eq!(w.cwd, Path::new("/tmp/x"));
    assert_eq!(w.auth.exit_codes, vec![77]);
    assert!(p.inherit.is_match("LC_ALL"));
}

#[test]
fn collects_every_semantic_error() {
    let errs = plan(
        "[[worker]]\nname = \"a\"\ncommand = []\nreplicas = 0\nkeys = [\"OK_KEY\", \"bad key\"]\n\
         [[worker]]\nname = \"a\"\ncommand = [\"x\"]\nstart = \"fork\"\n\
         [keys.K]\npattern = \"(\"\n",
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = text.join("\n");
    assert!(
        all.contains(":3:11: worker \"a\": `command` is empty"),
        "{all}"
    );
    assert!(
        all.contains(":4:12: worker \"a\": replicas must be at least 1"),
        "{all}"
    );
    assert!(
        all.contains("\"bad key\" is not a valid variable name or glob"),
        "{all}"
    );
    assert!(
        all.contains("duplicate worker name \"a\" (first defined at line 1)"),
        "{all}"
    );
    assert!(all.contains("start = \"fork\" needs `module`"), "{all}");
    assert!(
        all.contains("[keys.K] pattern is not a valid regex"),
        "{all}"
    );
}

#[test]
fn source_fields_checked_per_kind() {
    let errs =
        plan("[[source]]\ntype = \"dir\"\n[[source]]\ntype = \"env\"\npath = \"x\"\n").unwrap_err();
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(all[0].contains("needs `path`"));
    assert!(all[1].contains("does not take `path`"));
}

#[test]
fn names_and_globs() {
    assert!(is_var_name("OPENAI_API_KEY"));
    assert!(!is_var_name("1ABC"));
    assert!(!is_var_name("OPEN-AI"));
    assert!(is_name_or_glob("LANGSMITH_*"));
    assert!(!is_name_or_glob("A B"));
}
