//! Command lines: a shell string from a Procfile or supervisord becomes argv, and a
//! command given to `agentsup init -- …` becomes a worker (Celery gets the
//! one-process-per-replica form that docs/migrating.md recommends).

use super::DraftWorker;

/// A worker's `command`, as argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DraftCommand {
    /// The argv agentsup will exec.
    pub argv: Vec<String>,
    /// Whether the line needed a shell, and what the shell does.
    pub shell: Shell,
}

/// How a drafted command uses `sh -c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shell {
    /// Plain words: argv, no shell.
    No,
    /// One simple command behind `exec`: the program replaces the shell, so it gets
    /// the signals and gives the exit status.
    Exec,
    /// Several commands (`cd x && …`, a pipe, a redirect) or a shell builtin: the
    /// shell stays the worker's main process, running them in turn.
    Stays,
}

impl DraftCommand {
    /// Plain argv, no shell.
    pub(super) fn argv(argv: Vec<String>) -> DraftCommand {
        DraftCommand {
            argv,
            shell: Shell::No,
        }
    }
}

/// Characters a shell expands (`$PORT`, globs, `~`, history, comments) that argv
/// would pass literally: a line holding one goes through `sh -c`. Operators are
/// found by [`scan`], which knows about quotes.
const EXPANDS: &[char] = &['$', '`', '*', '?', '[', '~', '{', '!', '#'];

/// Words that are not programs: `exec cd` or `exec export` fails with status 127,
/// and a keyword (`if`, `{`) starts a compound command.
const NOT_A_PROGRAM: &[&str] = &[
    "cd", "export", "source", ".", "set", "unset", "alias", "unalias", "eval", "trap", "ulimit",
    "umask", "read", "shift", "wait", "return", "exit", "readonly", "local", "hash", "getopts",
    "jobs", "fg", "bg", "times", "break", "continue", ":", "if", "then", "for", "while", "until",
    "case", "{", "!", "function", "[[", "select", "declare", "typeset",
];

/// A shell command line as argv: split like a shell would when it is plain words
/// (quotes are fine), otherwise `sh -c`. `exec` goes in front of the program only
/// when the line is one simple command, so the program, not the shell, gets signals
/// and gives the exit status; leading `VAR=value` assignments stay in front of it
/// (`PORT=5000 exec python3 app.py`: dash and bash export them to the program).
/// A line of several commands, or one starting with a builtin, runs as written.
pub(super) fn from_shell_line(line: &str) -> DraftCommand {
    let line = line.trim();
    let scan = scan(line);
    let assigns = scan
        .words
        .iter()
        .take_while(|&&(a, b)| is_assignment(&line[a..b]))
        .count();
    if !scan.compound
        && assigns == 0
        && !line.contains(EXPANDS)
        && let Ok(mut words) = shell_words::split(line)
    {
        if words.first().is_some_and(|w| w == "exec") {
            // argv is exec'd anyway; `exec` is not a program
            words.remove(0);
        }
        if words
            .first()
            .is_some_and(|w| !NOT_A_PROGRAM.contains(&w.as_str()))
        {
            return DraftCommand::argv(words);
        }
    }
    let shell = |body: String, shell: Shell| DraftCommand {
        argv: vec!["sh".into(), "-c".into(), body],
        shell,
    };
    let program = scan.words.get(assigns).map(|&(a, b)| {
        let raw = &line[a..b];
        (
            a,
            shell_words::split(raw)
                .ok()
                .and_then(|w| w.into_iter().next())
                .unwrap_or(raw.to_string()),
        )
    });
    match program {
        Some((_, word)) if word == "exec" && !scan.compound => shell(line.to_string(), Shell::Exec),
        Some((start, word)) if !scan.compound && !NOT_A_PROGRAM.contains(&word.as_str()) => {
            let body = format!("{}exec {}", &line[..start], &line[start..]);
            shell(body, Shell::Exec)
        }
        _ => shell(line.to_string(), Shell::Stays),
    }
}

/// `NAME=…` as a shell reads it: an assignment when NAME is a variable name.
fn is_assignment(word: &str) -> bool {
    word.split_once('=')
        .is_some_and(|(k, _)| crate::sources::dotenv::is_valid_key(k))
}

/// A line's words (byte ranges, quotes kept) up to the end, and whether the line is
/// more than one simple command: an operator (`; & | < > ( )`) outside quotes, a
/// command substitution (`$(…)`, backticks) outside single quotes, or unbalanced
/// quotes (left for the shell to report).
struct Scan {
    words: Vec<(usize, usize)>,
    compound: bool,
}

fn scan(line: &str) -> Scan {
    #[derive(PartialEq)]
    enum Q {
        Out,
        Single,
        Double,
    }
    let mut q = Q::Out;
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut compound = false;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if q == Q::Out && c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((s, i));
            }
            continue;
        }
        start.get_or_insert(i);
        match (&q, c) {
            (Q::Single, '\'') => q = Q::Out,
            (Q::Single, _) => {}
            (_, '\\') => {
                chars.next();
            }
            (Q::Out, '\'') => q = Q::Single,
            (Q::Out, '"') => q = Q::Double,
            (Q::Double, '"') => q = Q::Out,
            (_, '`') => compound = true,
            (_, '$') if chars.peek().is_some_and(|&(_, n)| n == '(') => compound = true,
            (Q::Out, ';' | '&' | '|' | '<' | '>' | '(' | ')' | '\n') => compound = true,
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, line.len()));
    }
    Scan {
        words,
        compound: compound || q != Q::Out,
    }
}

/// A worker for `agentsup init -- CMD ARGS…`, and the `shutdown_timeout` it needs.
pub(crate) fn from_command_line(argv: &[String]) -> (DraftWorker, Option<String>) {
    let program = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
    if program == "celery" && argv.iter().any(|a| a == "worker") {
        return celery(argv);
    }
    let command = DraftCommand::argv(argv.to_vec());
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
        shell: Shell::Exec,
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
