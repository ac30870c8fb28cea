//! What a template may see, and what must hold before one is started.

use std::path::PathBuf;

use super::ForkError;
use crate::env::BuiltEnv;
use crate::plan::WorkerPlan;

/// The template's environment: the worker's `env` minus every secret.
///
/// Removed: every variable the worker declares in `keys` (exact names and globs),
/// `X_FILE` for every declared exact key `X` (the `*_FILE` indirection would hand
/// the key to any import that looks), everything `env` marks secret, and
/// `AGENTSUP_REPLICA` (the template is not a replica). Kept: `inherit`, `vars`,
/// `PYTHONUNBUFFERED`, `AGENTSUP_WORKER`, … — what the interpreter and imports
/// legitimately need, identical to what replicas see.
pub(crate) fn template_env(worker: &WorkerPlan, env: &BuiltEnv) -> Vec<(String, String)> {
    let feeds_a_key = |name: &str| {
        name.strip_suffix("_FILE")
            .is_some_and(|key| worker.keys_exact.iter().any(|k| k == key))
    };
    env.vars
        .iter()
        .filter(|(name, var)| {
            !var.secret
                && !worker.declares(name)
                && !feeds_a_key(name)
                && name.as_str() != "AGENTSUP_REPLICA"
        })
        .map(|(name, var)| (name.clone(), var.value.expose().to_string()))
        .collect()
}

/// Checks a fork-mode worker before anything starts: the interpreter is on the
/// worker's `PATH`, `script` exists, `preload` does not hold the worker's own
/// module. Returns the interpreter's path. `env` is any replica's environment.
pub(crate) fn preflight(worker: &WorkerPlan, env: &BuiltEnv) -> Result<PathBuf, ForkError> {
    let fork = worker.fork.as_ref().ok_or(ForkError::NotForkMode)?;
    let python = crate::process::resolve_program(&fork.python, env.path_var(), &worker.cwd)?;
    if let Some(script) = &fork.script {
        if !script.is_file() {
            return Err(ForkError::ScriptMissing {
                path: script.clone(),
            });
        }
        if script.to_str().is_none() {
            return Err(ForkError::NonUtf8 {
                what: "script",
                path: script.clone(),
            });
        }
    }
    if let Some(module) = &fork.module
        && fork.preload.iter().any(|p| p == module)
    {
        return Err(ForkError::PreloadsOwnModule {
            module: module.clone(),
        });
    }
    if worker.cwd.to_str().is_none() {
        return Err(ForkError::NonUtf8 {
            what: "working directory",
            path: worker.cwd.clone(),
        });
    }
    Ok(python)
}
