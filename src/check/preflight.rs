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
    match env.path_var().and_then(|path| near_program(program, path)) {
        Some(near) => Some(format!(
            "{e}; did you mean `{near}`? (else install it, give its full path, or fix PATH)"
        )),
        None => Some(format!("{e}{hint}")),
    }
}

/// A program on `path` one typo away from `program` (a swapped, missing, extra or
/// wrong character: `pyhton3` → `python3`), for a bare name only; the first one
/// in PATH order.
fn near_program(program: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    if program.contains('/') || program.chars().count() < 3 {
        return None;
    }
    for dir in std::env::split_paths(path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if strsim::damerau_levenshtein(program, name) == 1
                && std::fs::metadata(entry.path())
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            {
                return Some(name.to_string());
            }
        }
    }
    None
}
