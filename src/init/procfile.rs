//! Procfile (honcho, foreman, Heroku): `name: command` per line.

use super::DraftWorker;
use super::command::from_shell_line;

/// One worker per `name: command` line; comments and blank lines skipped.
pub(super) fn parse(text: &str, file: &str) -> Vec<DraftWorker> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            continue;
        };
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty() || command.is_empty() || name.contains(char::is_whitespace) {
            continue;
        }
        let cmd = from_shell_line(command);
        let mut worker = DraftWorker::new(name, cmd, format!("{file}:{}", i + 1));
        if command.contains("$PORT") {
            worker.notes.push(
                "uses $PORT, which honcho/foreman set per process: set it in this worker's \
                 `vars` (agentsup does not invent ports)"
                    .into(),
            );
            worker.vars.push(("PORT".into(), "5000".into()));
        }
        out.push(worker);
    }
    out
}
