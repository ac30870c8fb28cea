//! `agentsup init`: a commented `supervisor.toml` drafted from what a directory
//! already holds — a `.env` (its keys, never its values), `/run/secrets`, a
//! `Procfile`, a supervisord `[program:x]` file, a PM2 ecosystem file, or a command
//! given on the command line (`agentsup init -- celery -A proj worker -c 4`).
//!
//! Pure where it can be: [`discover`] reads files, [`Draft::render`] only formats.
//! Writing and the closing `check` live in the CLI layer.

mod command;
mod pm2;
mod procfile;
mod render;
mod supervisord;

use std::path::{Path, PathBuf};

pub(crate) use command::{DraftCommand, from_command_line};

/// Where `init` looks, and what it was given.
#[derive(Debug, Clone)]
pub(crate) struct InitRequest {
    /// The directory the config is for (it is written there).
    pub dir: PathBuf,
    /// The secret directory to look for (`/run/secrets` unless a test says otherwise).
    pub secrets_dir: PathBuf,
    /// `agentsup init -- CMD ARGS…`: a worker for this command line.
    pub command: Vec<String>,
}

/// One worker of the draft.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DraftWorker {
    /// The worker's name (sanitised to what the config accepts).
    pub name: String,
    /// argv.
    pub command: DraftCommand,
    /// Working directory, relative to the config when it can be.
    pub cwd: Option<String>,
    /// `replicas`, when more than one.
    pub replicas: u32,
    /// Non-secret literals (`vars`), in file order.
    pub vars: Vec<(String, String)>,
    /// Extra declared keys beyond the shared ones (secret-looking `environment=`
    /// entries whose values belong in a source, not in the config).
    pub keys: Vec<String>,
    /// `restart`, when not the default.
    pub restart: Option<&'static str>,
    /// `stop_signal`, when not the default.
    pub stop_signal: Option<String>,
    /// `stop_timeout`, when not the default.
    pub stop_timeout: Option<String>,
    /// `user`, from supervisord's `user=`.
    pub user: Option<String>,
    /// Where this worker came from (`Procfile:2`), shown as a comment.
    pub origin: String,
    /// Things the operator should know about this worker, shown as comments.
    pub notes: Vec<String>,
}

impl DraftWorker {
    fn new(name: &str, command: DraftCommand, origin: String) -> DraftWorker {
        DraftWorker {
            name: worker_name(name),
            command,
            cwd: None,
            replicas: 1,
            vars: Vec::new(),
            keys: Vec::new(),
            restart: None,
            stop_signal: None,
            stop_timeout: None,
            user: None,
            origin,
            notes: Vec::new(),
        }
    }
}

/// What `init` found, ready to render.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Draft {
    /// `.env` next to the config: its keys, in file order.
    pub dotenv_keys: Option<Vec<String>>,
    /// The secret directory and its keys, when it exists.
    pub secrets: Option<(PathBuf, Vec<String>)>,
    /// The workers.
    pub workers: Vec<DraftWorker>,
    /// `[supervisor] shutdown_timeout`, when a worker needs more than the default.
    pub shutdown_timeout: Option<String>,
    /// Keys to mark `secret = true` (URLs with passwords and the like).
    pub secret_keys: Vec<String>,
    /// Files that were read, for the header comment.
    pub read: Vec<String>,
}

/// Why `init` could not draft a config.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    /// A file exists but could not be read or understood.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The config file exists and `--force` was not given.
    #[error(
        "{path} already exists; agentsup init never overwrites a config\n  hint: move it aside, or pass --force to replace it"
    )]
    Exists {
        /// The file.
        path: String,
    },
    /// The config could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// Nothing to build a worker from.
    #[error(
        "found nothing to run in {dir}: no Procfile, supervisord [program:x] file or PM2 ecosystem file\n  \
         hint: name the command: `agentsup init -- python3 -m myagent` (or add a Procfile)"
    )]
    NothingToRun {
        /// The directory searched.
        dir: String,
    },
}

/// Writes the drafted config: created exclusively (never over an existing file)
/// unless `force`.
pub(crate) fn write_config(path: &Path, text: &str, force: bool) -> Result<(), InitError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::Exists {
                path: path.display().to_string(),
            }
        } else {
            InitError::Write {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        }
    })?;
    file.write_all(text.as_bytes())
        .map_err(|e| InitError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Reads what `dir` holds and drafts the workers and sources.
pub(crate) fn discover(req: &InitRequest) -> Result<Draft, InitError> {
    let mut draft = Draft::default();
    let dotenv = req.dir.join(".env");
    if dotenv.is_file() {
        let bytes = read(&dotenv)?;
        let parsed = crate::sources::dotenv::parse(&bytes);
        let mut keys: Vec<String> = parsed.effective().map(|r| r.key.clone()).collect();
        keys.dedup();
        draft.dotenv_keys = Some(keys);
        draft.read.push(".env".into());
    }
    if req.secrets_dir.is_dir() {
        let mut keys = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&req.secrets_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && crate::sources::dotenv::is_valid_key(&name) {
                    keys.push(name);
                }
            }
        }
        keys.sort();
        draft.secrets = Some((req.secrets_dir.clone(), keys));
    }
    if !req.command.is_empty() {
        let (worker, shutdown) = from_command_line(&req.command);
        draft.workers.push(worker);
        draft.shutdown_timeout = shutdown;
    }
    let procfile = req.dir.join("Procfile");
    if procfile.is_file() {
        let text = read_text(&procfile)?;
        draft.workers.extend(procfile::parse(&text, "Procfile"));
        draft.read.push("Procfile".into());
    }
    for name in supervisord::candidates(&req.dir) {
        let path = req.dir.join(&name);
        let text = read_text(&path)?;
        let workers =
            supervisord::parse(&text, &name, &req.dir).map_err(|reason| InitError::Unreadable {
                path: name.clone(),
                reason,
            })?;
        if !workers.is_empty() {
            draft.workers.extend(workers);
            draft.read.push(name);
        }
    }
    for name in pm2::CANDIDATES {
        let path = req.dir.join(name);
        if path.is_file() {
            let apps = pm2::load(&path).map_err(|reason| InitError::Unreadable {
                path: name.to_string(),
                reason,
            })?;
            draft.workers.extend(pm2::workers(&apps, name, &req.dir));
            draft.read.push(name.to_string());
            break;
        }
    }
    if draft.workers.is_empty() {
        return Err(InitError::NothingToRun {
            dir: req.dir.display().to_string(),
        });
    }
    dedupe_names(&mut draft.workers);
    draft.secret_keys = secret_keys(&draft);
    let longest_stop = draft
        .workers
        .iter()
        .filter_map(|w| w.stop_timeout.as_deref())
        .filter_map(|t| humantime::parse_duration(t).ok())
        .max();
    if let Some(stop) = longest_stop {
        // The global deadline must hold the longest stop plus a margin, or a worker
        // finishing its work is SIGKILLed at the global deadline.
        let needed = stop + std::time::Duration::from_secs(10);
        if needed > std::time::Duration::from_secs(10) && draft.shutdown_timeout.is_none() {
            draft.shutdown_timeout = Some(humantime::format_duration(needed).to_string());
        }
    }
    Ok(draft)
}

/// The keys every worker gets: the `.env` keys and the secret directory's.
pub(crate) fn shared_keys(draft: &Draft) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for k in draft.dotenv_keys.iter().flatten() {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    if let Some((_, secret)) = &draft.secrets {
        for k in secret {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys
}

/// Keys whose names don't look secret but usually hold a password (broker and
/// database URLs): marked `secret = true` so their values are redacted.
///
/// `[keys.NAME]` takes a variable name, never a glob. A glob key `STEM*` (how
/// `init` declares an optional variable such as `CELERY_RESULT_BACKEND*`) stands
/// for the variable `STEM`: the rule is looked up by the name of each variable a
/// worker gets, so it applies when the glob passes `STEM`. Other globs are skipped.
fn secret_keys(draft: &Draft) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = shared_keys(draft)
        .into_iter()
        .chain(draft.workers.iter().flat_map(|w| w.keys.clone()))
        .filter_map(|key| {
            let name = key.strip_suffix('*').unwrap_or(&key);
            crate::plan::is_var_name(name).then(|| name.to_string())
        });
    for key in all {
        let upper = key.to_ascii_uppercase();
        let url_like = upper.ends_with("_URL")
            || upper.ends_with("_DSN")
            || upper.ends_with("_URI")
            || upper.contains("BROKER")
            || upper.contains("BACKEND");
        if url_like && !crate::secret::name_looks_secret(&key) && !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

fn dedupe_names(workers: &mut [DraftWorker]) {
    let mut seen: Vec<String> = Vec::new();
    for w in workers.iter_mut() {
        let base = w.name.clone();
        let mut n = 2;
        while seen.contains(&w.name) {
            w.name = format!("{base}-{n}");
            n += 1;
        }
        seen.push(w.name.clone());
    }
}

/// A literal from another launcher's config that holds a secret: by its name, or a
/// connection URL with a password (the same rule the redactor uses).
pub(crate) fn must_not_be_copied(name: &str, value: &str) -> bool {
    crate::secret::name_looks_secret(name) || crate::redact::url_password(value).is_some()
}

/// A worker name the config accepts: letters, digits, `-` and `_`.
fn worker_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "worker".into()
    } else {
        name
    }
}

fn read(path: &Path) -> Result<Vec<u8>, InitError> {
    std::fs::read(path).map_err(|e| InitError::Unreadable {
        path: path.display().to_string(),
        reason: format!("cannot read it ({e})"),
    })
}

fn read_text(path: &Path) -> Result<String, InitError> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|_| InitError::Unreadable {
        path: path.display().to_string(),
        reason: "not UTF-8 text".into(),
    })
}

/// A path relative to the config's directory when it is inside it.
pub(crate) fn relative_to(dir: &Path, path: &str) -> String {
    let p = Path::new(path);
    match p.strip_prefix(dir) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.to_string(),
    }
}

#[cfg(test)]
mod tests;
