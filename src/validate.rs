//! The one validation pipeline, shared by `check`, `exec`, `run` and every re-read
//! while workers run:
//!
//! 1. **load** every source once ([`crate::sources::load_all`]); a `command`
//!    source registers what it printed with the redactor as it parses it, before
//!    anything about the command can be reported;
//! 2. **register** every value that could reach a worker as secret with the
//!    redactor ([`register_secrets`]), before anything can be printed;
//! 3. **check** the keys ([`crate::check::run`]);
//! 4. **preflight** each worker's command and `cwd` ([`crate::check::preflight`]);
//! 5. **probe** the keys with one authenticated request each, when asked
//!    ([`crate::probe`]).
//!
//! Having one pipeline is what makes `check` report exactly what would stop
//! `run`, and a re-read adopt new values only when they pass the checks that
//! start-up applied. The callers differ only in the [`Scope`] they ask for and in
//! how they print the [`Validation`].

use std::path::Path;
use std::time::Duration;

use crate::auth::Termination;
use crate::check::{self, Report};
use crate::plan::{Plan, WorkerPlan};
use crate::probe::{self, ProbeResult};
use crate::reaper::ReaperHandle;
use crate::redact::SharedRedactor;
use crate::sources::{self, Captured, CommandRunner, LoadContext, ProcessEnv, Snapshot};

/// What to validate, and how far to go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The selected workers; every worker of the plan when empty.
    pub workers: &'a [WorkerPlan],
    /// Whether each worker's command must be startable (`check`, `run`, re-reads;
    /// not `exec`, which runs a command of its own).
    pub preflight: bool,
    /// Probe every key with one request, with this timeout per request.
    pub probe: Option<Duration>,
}

/// What the pipeline found.
#[derive(Debug)]
pub(crate) struct Validation {
    /// Every source's values, with provenance.
    pub snapshot: Snapshot,
    /// The findings of checks, preflight and probes.
    pub report: Report,
    /// One result per distinct probed key (empty without a probe); callers print
    /// [`probe::summary_line`] for each, since the report has no place for
    /// accepted keys.
    pub probes: Vec<ProbeResult>,
}

/// Runs the pipeline. `runner` starts `command` sources; `redactor` learns every
/// secret value before this function returns, and before any of them could be
/// part of a message.
pub(crate) fn validate(
    plan: &Plan,
    process_env: &ProcessEnv,
    runner: &dyn CommandRunner,
    redactor: &SharedRedactor,
    scope: Scope<'_>,
) -> Validation {
    let snapshot = load_sources(plan, process_env, runner, redactor);
    // Each selected worker's environment, built once for every step below.
    let envs = crate::env::for_workers(plan, scope.workers, &snapshot, process_env);
    register(plan, &snapshot, process_env, redactor, &envs);
    let mut report = check::run(plan, &snapshot, process_env, &envs);
    if scope.preflight {
        report
            .findings
            .extend(check::preflight::findings(plan, &envs));
    }
    let mut probes = Vec::new();
    if let Some(timeout) = scope.probe {
        probes = probe::probe(plan, &envs, timeout);
        report.findings.extend(probe::findings(&probes));
    }
    drop(envs);
    Validation {
        snapshot,
        report,
        probes,
    }
}

/// Steps 1 and 2 alone: loads every source and registers every secret value with
/// `redactor`. What `env` needs, which shows values rather than checking them.
pub(crate) fn load(
    plan: &Plan,
    process_env: &ProcessEnv,
    runner: &dyn CommandRunner,
    redactor: &SharedRedactor,
    workers: &[WorkerPlan],
) -> Snapshot {
    let snapshot = load_sources(plan, process_env, runner, redactor);
    register_secrets(plan, &snapshot, process_env, redactor, workers);
    snapshot
}

/// Step 1: every source, loaded once (a `command` source registers what it
/// printed as it parses it).
fn load_sources(
    plan: &Plan,
    process_env: &ProcessEnv,
    runner: &dyn CommandRunner,
    redactor: &SharedRedactor,
) -> Snapshot {
    sources::load_all(
        plan,
        &LoadContext {
            process_env,
            runner,
            redactor,
        },
    )
}

/// Adds to `redactor`: the secret values of every key a worker declares (exact or
/// glob), every `*_FILE` value (a key pasted in place of a path), agentsup's own
/// credential-looking variables, and every secret of the environment each replica
/// of `workers` (every worker when empty) will get. Reports, errors and logs printed
/// afterwards are redacted with them (SPEC 7: agentsup's own messages too).
pub(crate) fn register_secrets(
    plan: &Plan,
    snap: &Snapshot,
    process_env: &ProcessEnv,
    redactor: &SharedRedactor,
    workers: &[WorkerPlan],
) {
    let envs = crate::env::for_workers(plan, workers, snap, process_env);
    register(plan, snap, process_env, redactor, &envs);
}

/// [`register_secrets`] with the selected workers' environments already built.
fn register(
    plan: &Plan,
    snap: &Snapshot,
    process_env: &ProcessEnv,
    redactor: &SharedRedactor,
    envs: &[crate::env::WorkerEnv<'_>],
) {
    let mut pairs = Vec::new();
    for (name, e) in snap
        .values
        .iter()
        .chain(snap.overridden.iter().map(|e| (&e.name, e)))
    {
        let declared = plan.workers.iter().any(|w| w.declares(name));
        if (declared && plan.is_secret(name, e.provenance.is_secret_source()))
            || name.ends_with("_FILE")
            || crate::secret::name_looks_secret(name)
        {
            pairs.push((name.clone(), e.value.clone()));
        }
        // A connection URL's password is secret whatever the variable is called.
        for password in crate::redact::url_password_forms(e.value.expose()) {
            pairs.push((name.clone(), crate::secret::Sensitive::new(password)));
        }
    }
    for (name, v) in &process_env.vars {
        if crate::secret::name_looks_secret(name) {
            pairs.push((name.clone(), v.clone()));
        }
        for password in crate::redact::url_password_forms(v.expose()) {
            pairs.push((name.clone(), crate::secret::Sensitive::new(password)));
        }
    }
    // Every replica of a worker gets the same secrets (see `env::for_workers`).
    for (_, env) in envs {
        pairs.extend(env.secrets());
    }
    redactor.extend(pairs);
}

/// Runs `command` sources through [`crate::process::run_capture`]: directly where no
/// reaper exists (`check`, `env`, `exec`), through the reaper in `run`.
pub(crate) struct SpawnRunner(pub Option<ReaperHandle>);

impl CommandRunner for SpawnRunner {
    fn run(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        timeout: Duration,
        creds: Option<&crate::sys::creds::Creds>,
    ) -> Result<Captured, String> {
        let mut out = crate::process::run_capture_as(
            argv,
            env,
            cwd,
            timeout,
            self.0.as_ref(),
            creds.cloned(),
        )
        .map_err(|e| e.to_string())?;
        let (code, signal) = match out.status {
            Termination::Exited(c) => (Some(c), None),
            Termination::Signaled(s) => (None, Some(s)),
        };
        Ok(Captured {
            code,
            signal,
            // Taken, not moved: the capture wipes whatever it still holds on drop.
            stdout: std::mem::take(&mut out.stdout),
            stderr: std::mem::take(&mut out.stderr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml: &str) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.toml");
        std::fs::write(&path, toml).unwrap();
        let plan = Plan::load(&path).unwrap();
        (dir, plan)
    }

    fn scope(preflight: bool) -> Scope<'static> {
        Scope {
            workers: &[],
            preflight,
            probe: None,
        }
    }

    const KEY: &str = "sk-proj-validate0123456789abcdefghij";

    #[test]
    fn preflight_is_part_of_the_report_only_when_asked() {
        let (_d, plan) = plan(
            "[env]\ninherit = [\"PATH\"]\n[[worker]]\nname = \"typo\"\ncommand = [\"pyhton3-not-here\", \"x.py\"]\n",
        );
        let penv = ProcessEnv::from_pairs([("PATH", "/usr/bin:/bin")]);
        let redactor = SharedRedactor::default();
        let v = validate(&plan, &penv, &SpawnRunner(None), &redactor, scope(true));
        let f = v
            .report
            .findings
            .iter()
            .find(|f| f.code == "command")
            .expect("a preflight finding");
        assert_eq!(f.workers, ["typo"]);
        assert!(f.message.contains("pyhton3-not-here"), "{}", f.message);
        assert!(v.report.has_errors());
        let v = validate(&plan, &penv, &SpawnRunner(None), &redactor, scope(false));
        assert!(!v.report.has_errors(), "{:?}", v.report.findings);
    }

    #[test]
    fn a_preflight_finding_names_its_worker_once() {
        let (_d, plan) = plan(
            "[env]\ninherit = [\"PATH\"]\n[[worker]]\nname = \"planner\"\ncommand = [\"pyhton3-not-here\"]\n",
        );
        let penv = ProcessEnv::from_pairs([("PATH", "/usr/bin:/bin")]);
        let v = validate(
            &plan,
            &penv,
            &SpawnRunner(None),
            &SharedRedactor::default(),
            scope(true),
        );
        let text = v.report.render_text(false);
        assert!(text.contains("\nerror    worker \"planner\"\n"), "{text}");
        assert!(!text.contains("(worker planner)"), "{text}");
    }

    #[test]
    fn a_program_one_typo_away_on_the_path_is_suggested() {
        let bin = tempfile::tempdir().unwrap();
        for (name, mode) in [("python3", 0o755), ("agentx", 0o644)] {
            let p = bin.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
        let path = format!("/nonexistent:{}", bin.path().display());
        let suggestion = |program: &str| {
            let (_d, plan) = plan(&format!(
                "[env]\ninherit = [\"PATH\"]\n[[worker]]\nname = \"w\"\ncommand = [\"{program}\"]\n"
            ));
            let penv = ProcessEnv::from_pairs([("PATH", path.as_str())]);
            let v = validate(
                &plan,
                &penv,
                &SpawnRunner(None),
                &SharedRedactor::default(),
                scope(true),
            );
            v.report.findings[0].message.clone()
        };
        assert!(suggestion("pyhton3").contains("did you mean `python3`?"));
        assert!(!suggestion("celery").contains("did you mean"));
        // Not executable: not a suggestion.
        assert!(
            !suggestion("agent").contains("did you mean"),
            "{}",
            suggestion("agent")
        );
    }

    #[test]
    fn every_declared_secret_is_registered_before_returning() {
        let (_d, plan) = plan(
            "[[source]]\ntype = \"env\"\n[[worker]]\nname = \"w\"\ncommand = [\"/bin/true\"]\nkeys = [\"OPENAI_API_KEY\"]\nreplicas = 2\n",
        );
        let penv = ProcessEnv::from_pairs([("OPENAI_API_KEY", KEY)]);
        let redactor = SharedRedactor::default();
        validate(&plan, &penv, &SpawnRunner(None), &redactor, scope(true));
        assert_eq!(
            redactor.redact_str(&format!("k={KEY}")),
            "k=[redacted:OPENAI_API_KEY]"
        );
    }
}
