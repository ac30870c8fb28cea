//! Command lines: a shell string from a Procfile or supervisord becomes argv, and a
//! command given to `agentsup init -- …` becomes a worker (Celery gets the
//! one-process-per-replica form that docs/migrating.md recommends).

use super::DraftWorker;

/// A worker's `command`, as argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DraftCommand {
    /// The argv agentsup will exec.
    pub argv: Vec<String>,
    /// True when the line needed a shell (`sh -c "exec …"`): PATH checks see only `sh`.
    pub via_shell: bool,
}

/// Characters that only a shell gives meaning to.
const SHELL_SYNTAX: &[char] = &[
    '$', '`', '|', '&', ';', '<', '>', '(', ')', '*', '?', '[', '~', '{', '!',
];

/// A shell command line as argv: split like a shell would when it is plain words,
/// otherwise `["sh", "-c", "exec LINE"]` (`exec` so the program, not the shell,
/// gets signals and gives the exit status).
pub(super) fn from_shell_line(line: &str) -> DraftCommand {
    let line = line.trim();
    let plain = !line.contains(SHELL_SYNTAX);
    if plain && let Ok(words) = shell_words::split(line) {
        // `FOO=bar cmd` (an assignment prefix) needs a shell too.
        let assigns = words.first().is_some_and(|w| {
            w.split_once('=')
                .is_some_and(|(k, _)| crate::sources::dotenv::is_valid_key(k))
        });
        if !words.is_empty() && !assigns {
            return DraftCommand {
                argv: words,
                via_shell: false,
            };
        }
    }
    let body = if line.starts_with("exec ") {
        line.to_string()
    } else {
        format!("exec {line}")
    };
    DraftCommand {
        argv: vec!["sh".into(), "-c".into(), body],
        via_shell: true,
    }
}

/// A worker for `agentsup init -- CMD ARGS…`, and the `shutdown_timeout` it needs.
pub(crate) fn from_command_line(argv: &[String]) -> (DraftWorker, Option<String>) {
    let program = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
    if program == "celery" && argv.iter().any(|a| a == "worker") {
        return celery(argv);
    }
    let command = DraftCommand {
        argv: argv.to_vec(),
        via_shell: false,
    };
    let name = if program == "python" || program == "python3" || program == "node" {
        // `python3 -m pkg.agent` → `agent`; `node worker.mjs` → `worker`.
        argv.iter()
            .skip(1)
            .rfind(|a| !a.starts_with('-'))
            .map(|a| {
                let last = a
                    .rsplit(['/', '.'])
                    .find(|p| !p.is_empty() && *p != "py" && *p != "mjs" && *p != "js");
                last.unwrap_or(a).to_string()
            })
            .unwrap_or(program.clone())
    } else {
        program
    };
    let worker = DraftWorker::new(&name, command, "the command line".into());
    (worker, None)
}

/// `celery -A proj worker --concurrency=4 …` → 4 replicas of a one-process solo
/// worker, each with its own node name (the recommended Option B).
fn celery(argv: &[String]) -> (DraftWorker, Option<String>) {
    let mut replicas: u32 = 1;
    let mut kept: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        let takes_value = |long: &str, short: &str| a == long || a == short;
        if let Some(v) = a.strip_prefix("--concurrency=") {
            replicas = v.parse().unwrap_or(1);
        } else if takes_value("--concurrency", "-c") {
            replicas = argv.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1);
            i += 1;
        } else if a.starts_with("--pool=")
            || a.starts_with("--hostname=")
            || a.starts_with("--autoscale=")
        {
            // replaced below: one solo process per replica, named per replica
        } else if takes_value("--pool", "-P")
            || takes_value("--hostname", "-n")
            || a == "--autoscale"
        {
            i += 1;
        } else {
            kept.push(a.clone());
        }
        i += 1;
    }
    let mut line: Vec<String> = kept.iter().map(|w| shell_quote(w)).collect();
    line.push("--pool=solo".into());
    line.push("-n".into());
    line.push("celery-$AGENTSUP_REPLICA@%h".into());
    let command = DraftCommand {
        argv: vec!["sh".into(), "-c".into(), format!("exec {}", line.join(" "))],
        via_shell: true,
    };
    let mut worker = DraftWorker::new("celery", command, "the command line".into());
    worker.replicas = replicas.max(1);
    worker.stop_timeout = Some("30s".into());
    worker.keys = vec![
        "CELERY_BROKER_URL".into(),
        "CELERY_RESULT_BACKEND*".into(),
        "DJANGO_SETTINGS_MODULE*".into(),
    ];
    worker.notes = vec![
        "one Celery process per replica (--pool=solo), each with its own node name: agentsup \
         restarts, backs off and recovers each one (docs/migrating.md, Option B)"
            .into(),
        "add `agentsup.celery.exit_on_auth_error(app)` where the app is created, so a task \
         whose key was rejected stops the worker with status 77 (pip install agentsup)"
            .into(),
    ];
    (worker, Some("40s".into()))
}

/// Quotes a word for `sh -c` only when it needs it.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        word.to_string()
    } else {
        shell_words::quote(word).into_owned()
    }
}
