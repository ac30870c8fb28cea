//! Pure parts of fork mode: the template's environment and the preflight checks.
//! The process-level behaviour is tested in `tests/fork_tests.rs`.

use std::path::{Path, PathBuf};

use super::*;
use crate::plan::Plan;
use crate::process::SpawnError;
use crate::secret::{Provenance, Sensitive};
use crate::sources::{Entry, ProcessEnv, Snapshot};

fn plan(dir: &Path, worker: &str) -> Plan {
    let text = format!(
        "[env]\ninherit = [\"PATH\", \"SESSION_TOKEN\"]\nvars = {{ LOG_LEVEL = \"info\" }}\n\
         [keys.PUBLIC_KEY]\nsecret = false\n\
         [[worker]]\nname = \"w\"\nstart = \"fork\"\nreplicas = 2\n{worker}"
    );
    Plan::from_text(&dir.join("supervisor.toml"), &text).unwrap()
}

fn snapshot(pairs: &[(&str, &str)]) -> Snapshot {
    let mut snap = Snapshot::default();
    for (name, value) in pairs {
        snap.values.insert(
            name.to_string(),
            Entry {
                name: name.to_string(),
                value: Sensitive::new(*value),
                provenance: Provenance::SecretFile {
                    path: PathBuf::from("/run/secrets").join(name),
                },
                source_index: 0,
                quote: None,
                notes: Vec::new(),
            },
        );
    }
    snap
}

#[test]
fn template_env_drops_every_key_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "module = \"agent\"\nkeys = [\"OPENAI_API_KEY\", \"LANGSMITH_*\", \"PUBLIC_KEY\", \"MODEL\"]\n\
         vars = { OPENAI_API_KEY_FILE = \"/run/k\", MODEL_FILE = \"/m\", EXTRA = \"x\" }\n",
    );
    let w = &p.workers[0];
    let snap = snapshot(&[
        ("OPENAI_API_KEY", "sk-secret-value-1234567890"),
        ("LANGSMITH_API_KEY", "ls-secret-value"),
        ("LANGSMITH_PROJECT", "proj"),
        ("PUBLIC_KEY", "not-secret-but-declared"),
        ("MODEL", "gpt"),
    ]);
    let penv = ProcessEnv::from_pairs([("PATH", "/bin"), ("SESSION_TOKEN", "inherited-secret")]);
    let env = crate::env::build(&p, w, 1, &snap, &penv);
    let names: Vec<String> = template_env(w, &env).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "AGENTSUP_REPLICAS",
            "AGENTSUP_WORKER",
            "EXTRA",
            "LOG_LEVEL",
            "PATH",
            "PYTHONUNBUFFERED",
            "PYTHON_DOTENV_DISABLED",
        ]
    );
    // Declared keys go even when not secret (MODEL, PUBLIC_KEY, LANGSMITH_PROJECT),
    // so does `X_FILE` for a declared `X` (OPENAI_API_KEY_FILE, MODEL_FILE), and so
    // does an inherited secret (SESSION_TOKEN, secret by name).
    let all = template_env(w, &env);
    assert!(all.iter().all(|(_, v)| !v.contains("secret")));
}

#[test]
fn preflight_checks_python_script_and_preload() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("python3");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path_env = ProcessEnv::from_pairs([("PATH", bin.to_str().unwrap())]);

    let p = plan(dir.path(), "module = \"agent\"\npreload = [\"json\"]\n");
    let env = crate::env::build(&p, &p.workers[0], 0, &Snapshot::default(), &path_env);
    assert_eq!(preflight(&p.workers[0], &env).unwrap(), fake);

    let no_path = crate::env::build(
        &p,
        &p.workers[0],
        0,
        &Snapshot::default(),
        &ProcessEnv::default(),
    );
    assert!(matches!(
        preflight(&p.workers[0], &no_path),
        Err(ForkError::Spawn(SpawnError::NoPath { .. }))
    ));

    let p = plan(dir.path(), "script = \"missing.py\"\n");
    let env = crate::env::build(&p, &p.workers[0], 0, &Snapshot::default(), &path_env);
    let err = preflight(&p.workers[0], &env).unwrap_err();
    assert!(matches!(err, ForkError::ScriptMissing { .. }), "{err}");
    assert!(err.to_string().contains("missing.py"), "{err}");

    let p = plan(dir.path(), "module = \"agent\"\npreload = [\"agent\"]\n");
    let env = crate::env::build(&p, &p.workers[0], 0, &Snapshot::default(), &path_env);
    assert!(matches!(
        preflight(&p.workers[0], &env),
        Err(ForkError::PreloadsOwnModule { .. })
    ));
}

#[test]
fn errors_name_the_module_and_keep_the_traceback() {
    let e = ForkError::Preload {
        module: "langchain_openai".into(),
        traceback: "Traceback (most recent call last):\nModuleNotFoundError: No module named 'langchain_openai'".into(),
    };
    let text = e.to_string();
    assert!(text.contains("\"langchain_openai\""), "{text}");
    assert!(
        text.ends_with("No module named 'langchain_openai'"),
        "{text}"
    );
}

#[test]
fn the_template_program_is_embedded() {
    assert!(TEMPLATE_SOURCE.contains("def main():"));
    assert!(TEMPLATE_SOURCE.contains("os.setsid()"));
}
