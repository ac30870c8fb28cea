//! The exact environment of one replica (SPEC 3), as one pure function.
//!
//! Layers, lowest first; a later layer overrides an earlier one:
//!
//! 1. `[env] inherit` names (globs) from agentsup's own environment;
//! 2. the keys the worker declares, exact and glob, resolved across the sources;
//! 3. `PYTHONUNBUFFERED=1` and `PYTHON_DOTENV_DISABLED=1` (unless `worker_dotenv`),
//!    which a worker's `vars` may override;
//! 4. `[env] vars`, then the worker's `vars`;
//! 5. `AGENTSUP_WORKER`, `AGENTSUP_REPLICA`, `AGENTSUP_REPLICAS`, which nothing
//!    overrides because supervision relies on them.
//!
//! Nothing else gets in: a variable in a source that the worker does not declare
//! never reaches it. `run`, `env` and `exec` all call [`build`].

use std::collections::BTreeMap;

use crate::plan::{Plan, WorkerPlan};
use crate::secret::{Provenance, Sensitive};
use crate::sources::{ProcessEnv, Snapshot};

/// One variable of a built environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The value.
    pub value: Sensitive,
    /// Where it came from.
    pub provenance: Provenance,
    /// Redact in output, mask in reports.
    pub secret: bool,
}

/// The environment of one replica.
#[derive(Debug, Clone, Default)]
pub struct BuiltEnv {
    /// Variables by name.
    pub vars: BTreeMap<String, EnvVar>,
    /// Declared exact keys that no source provides (the check reports them).
    pub missing: Vec<String>,
}

impl BuiltEnv {
    /// `(name, value)` pairs for `execve`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.value.expose().to_string()))
            .collect()
    }

    /// The secret variables, for the redactor.
    /// Also the password of any connection URL (`postgres://app:PASS@db`), under
    /// the variable's name, whether or not the variable is secret (issue 12).
    pub fn secrets(&self) -> impl Iterator<Item = (String, Sensitive)> + '_ {
        self.vars.iter().flat_map(|(k, v)| {
            let whole = v.secret.then(|| (k.clone(), v.value.clone()));
            let passwords = crate::redact::url_password_forms(v.value.expose());
            whole.into_iter().chain(
                passwords
                    .into_iter()
                    .map(|p| (k.clone(), Sensitive::new(p))),
            )
        })
    }

    /// The PATH the worker will see (its command is looked up there).
    pub(crate) fn path_var(&self) -> Option<&str> {
        self.vars.get("PATH").map(|v| v.value.expose())
    }
}

/// What `worker` inherits from agentsup's environment (`[env] inherit`). A worker
/// run as another user (`user`) gets that user's HOME, USER and LOGNAME where it
/// would have inherited agentsup's (provenance [`Provenance::Agentsup`]): a HOME
/// it cannot write, or USER naming root, breaks tools (pip caches, git config,
/// ssh). Also what the worker's `ready = { exec = … }` probe runs with.
pub(crate) fn inherited<'a>(
    plan: &'a Plan,
    worker: &'a WorkerPlan,
    process_env: &'a ProcessEnv,
) -> impl Iterator<Item = (&'a str, Sensitive, Provenance)> + 'a {
    let account = worker.creds.as_ref().and_then(|c| c.account.as_ref());
    process_env
        .vars
        .iter()
        .filter(|(name, _)| plan.inherit.is_match(name.as_str()))
        .map(
            move |(name, value)| match account.and_then(|a| a.variable(name)) {
                Some(own) => (name.as_str(), Sensitive::new(own), Provenance::Agentsup),
                None => (name.as_str(), value.clone(), Provenance::ProcessEnv),
            },
        )
}

/// Builds the environment of replica `replica` of `worker`.
pub fn build(
    plan: &Plan,
    worker: &WorkerPlan,
    replica: u32,
    snapshot: &Snapshot,
    process_env: &ProcessEnv,
) -> BuiltEnv {
    let mut out = BuiltEnv::default();
    let mut set = |name: &str, value: Sensitive, provenance: Provenance, secret: bool| {
        out.vars.insert(
            name.to_string(),
            EnvVar {
                value,
                provenance,
                secret,
            },
        );
    };

    for (name, value, provenance) in inherited(plan, worker, process_env) {
        let secret = provenance == Provenance::ProcessEnv && plan.is_secret(name, false);
        set(name, value, provenance, secret);
    }

    for key in &worker.keys_exact {
        if let Some(e) = snapshot.get(key) {
            let secret = plan.is_secret(key, e.provenance.is_secret_source());
            set(key, e.value.clone(), e.provenance.clone(), secret);
        }
    }
    if !worker.key_globs.is_empty() {
        for (name, e) in &snapshot.values {
            if worker.key_globset.is_match(name) {
                let secret = plan.is_secret(name, e.provenance.is_secret_source());
                set(name, e.value.clone(), e.provenance.clone(), secret);
            }
        }
    }

    set(
        "PYTHONUNBUFFERED",
        Sensitive::new("1"),
        Provenance::Agentsup,
        false,
    );
    if !plan.worker_dotenv {
        set(
            "PYTHON_DOTENV_DISABLED",
            Sensitive::new("1"),
            Provenance::Agentsup,
            false,
        );
    }
    for (k, v) in &plan.global_vars {
        set(
            k,
            Sensitive::new(v.clone()),
            Provenance::GlobalVars,
            plan.is_secret(k, false),
        );
    }
    for (k, v) in &worker.vars {
        set(
            k,
            Sensitive::new(v.clone()),
            Provenance::WorkerVars,
            plan.is_secret(k, false),
        );
    }
    set(
        "AGENTSUP_WORKER",
        Sensitive::new(worker.name.clone()),
        Provenance::Agentsup,
        false,
    );
    set(
        "AGENTSUP_REPLICA",
        Sensitive::new(replica.to_string()),
        Provenance::Agentsup,
        false,
    );
    set(
        "AGENTSUP_REPLICAS",
        Sensitive::new(worker.replicas.to_string()),
        Provenance::Agentsup,
        false,
    );

    out.missing = worker
        .keys_exact
        .iter()
        .filter(|k| !out.vars.contains_key(*k))
        .cloned()
        .collect();
    out
}

/// One selected worker and the environment of its first replica.
pub(crate) type WorkerEnv<'p> = (&'p WorkerPlan, BuiltEnv);

/// Replica 0's environment of each of `workers` (every worker of the plan when
/// empty), built once per validation and read by all of its steps: registering
/// secrets, the checks, preflight and probes. A replica's index changes only
/// `AGENTSUP_REPLICA`, never a secret or anything those steps look at.
pub(crate) fn for_workers<'p>(
    plan: &'p Plan,
    workers: &'p [WorkerPlan],
    snapshot: &Snapshot,
    process_env: &ProcessEnv,
) -> Vec<WorkerEnv<'p>> {
    let selected = if workers.is_empty() {
        &plan.workers[..]
    } else {
        workers
    };
    selected
        .iter()
        .map(|w| (w, build(plan, w, 0, snapshot, process_env)))
        .collect()
}

/// An ad-hoc worker for `agentsup exec --keys K1,K2` (no `[[worker]]` entry).
pub(crate) fn adhoc_worker(plan: &Plan, name: &str, keys: &[String]) -> WorkerPlan {
    let mut gb = globset::GlobSetBuilder::new();
    let mut exact = Vec::new();
    let mut globs = Vec::new();
    for k in keys {
        if crate::plan::is_var_name(k) {
            exact.push(k.clone());
        } else if let Ok(g) = globset::Glob::new(k) {
            gb.add(g);
            globs.push(k.clone());
        }
    }
    WorkerPlan {
        name: name.to_string(),
        line: 0,
        command: Vec::new(),
        cwd: plan.config_dir.clone(),
        replicas: 1,
        keys_exact: exact,
        key_globs: globs,
        key_globset: gb.build().unwrap_or_else(|_| globset::GlobSet::empty()),
        vars: BTreeMap::new(),
        restart: crate::config::RestartMode::Never,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
        stop_timeout: std::time::Duration::from_secs(10),
        stop_timeout_set: false,
        stop_target: crate::config::StopTarget::Group,
        on_rotation: crate::config::OnRotation::NextStart,
        reload_signal: nix::sys::signal::Signal::SIGHUP,
        ready: None,
        start: crate::config::StartMode::Spawn,
        fork: None,
        backoff: crate::plan::BackoffPlan::default(),
        max_restarts: 0,
        auth: crate::plan::AuthPlan::default(),
        creds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Entry;
    use std::path::{Path, PathBuf};

    fn plan(text: &str) -> Plan {
        Plan::from_text(Path::new("/tmp/p/supervisor.toml"), text).unwrap()
    }

    fn entry(name: &str, value: &str, provenance: Provenance) -> Entry {
        Entry {
            name: name.into(),
            value: Sensitive::new(value),
            provenance,
            source_index: 0,
            quote: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn exactly_the_declared_layers() {
        let p = plan(
            "[env]\ninherit = [\"PATH\", \"LC_*\"]\nvars = { LOG_LEVEL = \"info\" }\n\
             [[worker]]\nname = \"planner\"\ncommand = [\"python3\"]\nreplicas = 3\n\
             keys = [\"OPENAI_API_KEY\", \"LANGSMITH_*\", \"MISSING_KEY\"]\nvars = { MODEL = \"m\", PYTHONUNBUFFERED = \"0\" }\n",
        );
        let mut snap = Snapshot::default();
        for e in [
            entry(
                "OPENAI_API_KEY",
                "sk-abc",
                Provenance::SecretFile {
                    path: PathBuf::from("/run/secrets/OPENAI_API_KEY"),
                },
            ),
            entry(
                "LANGSMITH_PROJECT",
                "p",
                Provenance::Dotenv {
                    path: PathBuf::from(".env"),
                    line: 2,
                },
            ),
            entry("UNDECLARED", "x", Provenance::ProcessEnv),
        ] {
            snap.values.insert(e.name.clone(), e);
        }
        let penv = ProcessEnv::from_pairs([
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("HOME", "/root"),
            ("SECRET_TOKEN", "t"),
        ]);
        let env = build(&p, &p.workers[0], 2, &snap, &penv);
        let names: Vec<&str> = env.vars.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                "AGENTSUP_REPLICA",
                "AGENTSUP_REPLICAS",
                "AGENTSUP_WORKER",
                "LANGSMITH_PROJECT",
                "LC_ALL",
                "LOG_LEVEL",
                "MODEL",
                "OPENAI_API_KEY",
                "PATH",
                "PYTHONUNBUFFERED",
                "PYTHON_DOTENV_DISABLED"
            ]
        );
        assert_eq!(env.vars["AGENTSUP_REPLICA"].value.expose(), "2");
        assert_eq!(env.vars["PYTHONUNBUFFERED"].value.expose(), "0");
        assert_eq!(
            env.vars["PYTHONUNBUFFERED"].provenance,
            Provenance::WorkerVars
        );
        assert!(env.vars["OPENAI_API_KEY"].secret);
        assert!(!env.vars["LANGSMITH_PROJECT"].secret);
        assert_eq!(env.missing, vec!["MISSING_KEY".to_string()]);
    }

    #[test]
    fn worker_dotenv_keeps_python_dotenv_enabled() {
        let p = plan("[env]\nworker_dotenv = true\n[[worker]]\nname = \"w\"\ncommand = [\"x\"]\n");
        let env = build(
            &p,
            &p.workers[0],
            0,
            &Snapshot::default(),
            &ProcessEnv::default(),
        );
        assert!(!env.vars.contains_key("PYTHON_DOTENV_DISABLED"));
    }
}
