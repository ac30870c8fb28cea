//! Preflight: can each selected worker actually be started? Its `cwd` must be a
//! directory and its program (or, in fork mode, its Python, script and module
//! settings) must resolve on the worker's own PATH, the one [`crate::env::build`]
//! gives it. A typo in `command` is a configuration error found before anything
//! starts (exit 78), not a crash loop that ends in `failed` minutes later.
//!
//! `check`, `run` and every re-read get these findings from
//! [`crate::validate`], so `check` reports exactly what would stop `run`.

use crate::config::StartMode;
use crate::diag::Finding;
use crate::diag::Severity;
use crate::plan::{Plan, WorkerPlan};

/// One `command` error finding per worker of `workers` (every worker of the plan
/// when empty) that could not be started. Never holds a value: the messages name
/// programs, paths and PATH, which are configuration, not secrets.
pub(crate) fn findings(plan: &Plan, envs: &[crate::env::WorkerEnv<'_>]) -> Vec<Finding> {
    envs.iter()
        .filter_map(|(w, env)| problem(plan, w, env).map(|p| finding(w, p)))
        .collect()
}

fn finding(w: &WorkerPlan, message: String) -> Finding {
    Finding {
        severity: Severity::Error,
        code: "command",
        key: None,
        workers: vec![w.name.clone()],
        location: Some(format!("worker {:?}", w.name)),
        message,
        hint: None,
    }
}

/// Why `w` cannot be started, if it cannot.
fn problem(plan: &Plan, w: &WorkerPlan, env: &crate::env::BuiltEnv) -> Option<String> {
    if !w.cwd.is_dir() {
        return Some(format!(
            "cwd {} is not a directory; fix `cwd` (relative paths start at {})",
            w.cwd.display(),
            plan.config_dir.display()
        ));
    }
    if w.start == StartMode::Fork {
        return crate::fork::preflight(w, env).err().map(|e| e.to_string());
    }
    let program = w.command.first()?;
    let e = crate::process::resolve_program(program, env.path_var(), &w.cwd).err()?;
    let hint = if env.path_var().is_none() {
        "; add PATH to [env] inherit or to the worker's vars"
    } else {
        "; install it, give its full path, or fix PATH"
    };
    Some(format!("{e}{hint}"))
}
