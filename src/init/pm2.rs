//! PM2 ecosystem files: `ecosystem.config.js` (evaluated by node, as PM2 does) or
//! `ecosystem.json` / `ecosystem.config.json`.

use std::path::Path;
use std::process::Command;

use super::command::{DraftCommand, from_shell_line};
use super::{DraftWorker, relative_to};

/// Looked for in this order; the first one found is used.
pub(super) const CANDIDATES: [&str; 4] = [
    "ecosystem.config.js",
    "ecosystem.config.cjs",
    "ecosystem.config.json",
    "ecosystem.json",
];

/// The `apps` array of the file, as JSON.
pub(super) fn load(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let json = if name.ends_with(".json") {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read it ({e})"))?
    } else {
        // A .js ecosystem file is a CommonJS module: only node can evaluate it.
        // `init` runs before any supervision (no reaper is installed), so waiting on
        // this one child directly is safe.
        let script = "const m = require(process.argv[1]); \
                      process.stdout.write(JSON.stringify(m && m.apps ? m : {apps: []}))";
        #[allow(clippy::disallowed_methods)]
        let out = Command::new("node")
            .args(["-e", script, &path.display().to_string()])
            .env_remove("NODE_OPTIONS")
            .output()
            .map_err(|e| {
                format!("cannot run node to read it ({e}); install Node.js or convert it to ecosystem.json")
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!("node could not load it: {first}"));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("not valid JSON: {e}"))?;
    match value.get("apps") {
        Some(serde_json::Value::Array(apps)) => Ok(apps.clone()),
        _ => Err("has no `apps` array".into()),
    }
}

/// One worker per app.
pub(super) fn workers(apps: &[serde_json::Value], file: &str, dir: &Path) -> Vec<DraftWorker> {
    let mut out = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let s = |k: &str| app.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let Some(script) = s("script") else { continue };
        let name = s("name").unwrap_or_else(|| format!("app{i}"));
        let args: Vec<String> = match app.get("args") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(a)) => shell_words::split(a).unwrap_or_default(),
            _ => Vec::new(),
        };
        let interpreter = s("interpreter");
        let command = match interpreter.as_deref() {
            Some("none") => {
                let mut argv = vec![script.clone()];
                argv.extend(args);
                DraftCommand::argv(argv)
            }
            Some(interp) => {
                let mut argv = vec![interp.to_string(), script.clone()];
                argv.extend(args);
                DraftCommand::argv(argv)
            }
            None if script.ends_with(".js")
                || script.ends_with(".mjs")
                || script.ends_with(".cjs") =>
            {
                let mut argv = vec!["node".to_string(), script.clone()];
                argv.extend(args);
                DraftCommand::argv(argv)
            }
            None if script.ends_with(".py") => {
                let mut argv = vec!["python3".to_string(), script.clone()];
                argv.extend(args);
                DraftCommand::argv(argv)
            }
            None if args.is_empty() => from_shell_line(&script),
            None => {
                let mut argv = vec![script.clone()];
                argv.extend(args);
                DraftCommand::argv(argv)
            }
        };
        let mut worker = DraftWorker::new(&name, command, format!("{file} apps[{i}]"));
        if let Some(cwd) = s("cwd") {
            worker.cwd = Some(relative_to(dir, &cwd));
        }
        worker.replicas = match app.get("instances") {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(1).clamp(1, 10_000) as u32,
            Some(serde_json::Value::String(s)) if s == "max" || s == "-1" => {
                worker.notes.push(
                    "instances = \"max\" in PM2: set replicas to the CPUs this container gets"
                        .into(),
                );
                std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1)
            }
            _ => 1,
        };
        if app.get("autorestart").and_then(|v| v.as_bool()) == Some(false) {
            worker.restart = Some("never");
        } else {
            worker.restart = Some("always"); // PM2 restarts on any exit by default
        }
        if let Some(ms) = app.get("kill_timeout").and_then(|v| v.as_u64()) {
            worker.stop_timeout =
                Some(humantime::format_duration(std::time::Duration::from_millis(ms)).to_string());
        }
        if let Some(serde_json::Value::Object(env)) = app.get("env") {
            for (k, v) in env {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if super::must_not_be_copied(k, &v) {
                    worker.keys.push(k.clone());
                    worker.notes.push(format!(
                        "{k} was a literal in the PM2 env: move its value into .env (or a secret \
                         directory); it is declared here, not copied"
                    ));
                } else {
                    worker.vars.push((k.clone(), v));
                }
            }
        }
        if let Some(obj) = app.as_object() {
            for (block, vars) in obj {
                let Some(env) = block.strip_prefix("env_") else {
                    continue;
                };
                let names: Vec<&str> = vars
                    .as_object()
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                // Names only: a value here may be a secret like any other.
                worker.notes.push(format!(
                    "PM2's `{block}` (for `pm2 start --env {env}`) was not copied: {}; agentsup \
                     has one environment per config, so put what this deployment needs in \
                     `vars` (values that are secrets in .env or a secret directory)",
                    if names.is_empty() {
                        "it sets nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            }
        }
        if app.get("exec_mode").and_then(|v| v.as_str()) == Some("cluster") {
            worker.notes.push(
                "PM2 cluster mode shared one port between instances; agentsup replicas are \
                 separate processes: give each its own port or put a proxy in front"
                    .into(),
            );
        }
        out.push(worker);
    }
    out
}
