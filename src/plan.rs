//! The checked, resolved form of `supervisor.toml`.
//!
//! [`Plan::load`] reads the file, parses it with [`crate::config`], and then checks
//! everything serde cannot: per-kind source fields, duplicate worker names, empty
//! commands, replica counts, key names and globs, regexes, fork settings. It
//! collects **every** problem before failing, as a linter does, so a user fixes the
//! file in one pass. Paths are resolved against the config file's directory
//! (SPEC 1). Everything downstream takes only a [`Plan`].

mod build;
pub(crate) mod size;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;
use regex::Regex;

use crate::config::{
    self, CommandFormat, LogFormat, OnGiveUp, OnRotation, Provider, RestartMode, StartMode,
};
use crate::exit::Error;

/// Default `[env] inherit` when the table does not set it (SPEC 2).
pub(crate) const DEFAULT_INHERIT: &[&str] = &["PATH", "HOME", "LANG", "LC_*", "TZ"];

pub use crate::paths::ConfigOrigin;

/// Finds the config file: `-c`, then `$AGENTSUP_CONFIG`, then `./supervisor.toml`.
pub(crate) fn locate(flag: Option<&Path>, env_value: Option<&str>) -> (PathBuf, ConfigOrigin) {
    if let Some(p) = flag {
        return (p.to_path_buf(), ConfigOrigin::Flag);
    }
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        return (PathBuf::from(v), ConfigOrigin::EnvVar);
    }
    (PathBuf::from("supervisor.toml"), ConfigOrigin::Default)
}

/// Finds the config file the way every command does (`-c`, `$AGENTSUP_CONFIG`,
/// `./supervisor.toml`) and loads it; a missing file gets a hint about how it was
/// looked for.
pub(crate) fn load_located(flag: Option<&Path>) -> Result<Plan, Error> {
    let env_value = std::env::var("AGENTSUP_CONFIG").ok();
    let (path, origin) = locate(flag, env_value.as_deref());
    Plan::load(&path).map_err(|mut e| {
        if let Error::ConfigUnreadable { origin: o, .. } = &mut e {
            *o = Some(origin);
        }
        e
    })
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Plan {
    /// The config file, as given.
    pub config_path: PathBuf,
    /// Its directory, absolute; relative paths resolve against it.
    pub config_dir: PathBuf,
    /// `[supervisor]` with defaults applied.
    pub supervisor: SupervisorPlan,
    /// `[env] inherit` patterns, as written (for reports).
    pub inherit_patterns: Vec<String>,
    /// Compiled `inherit` globs.
    pub inherit: GlobSet,
    /// `[env] vars`.
    pub global_vars: BTreeMap<String, String>,
    /// `[env] worker_dotenv`.
    pub worker_dotenv: bool,
    /// Sources in order; later ones override earlier ones.
    pub sources: Vec<SourcePlan>,
    /// `[keys.NAME]` rules.
    pub key_rules: BTreeMap<String, KeyRulePlan>,
    /// Workers in file order.
    pub workers: Vec<WorkerPlan>,
}

/// The share of `shutdown_timeout` after which agentsup SIGKILLs whatever it
/// started that is still running: the rest is for reaping and draining output, so
/// that the whole stop fits inside the timeout and an orchestrator's own SIGKILL
/// (Docker's 10 s default is the same) never comes first.
pub(crate) const KILL_AT: f64 = 0.9;

/// When, after a stop begins, agentsup kills what is left ([`KILL_AT`]).
pub(crate) fn kill_after(shutdown_timeout: Duration) -> Duration {
    shutdown_timeout.mul_f64(KILL_AT)
}

/// `[supervisor]`, defaults applied.
#[derive(Debug, Clone)]
pub struct SupervisorPlan {
    /// Whole-shutdown grace.
    pub shutdown_timeout: Duration,
    /// Output format.
    pub log_format: LogFormat,
    /// Health endpoint address, if any.
    pub health: Option<String>,
    /// Give-up behaviour.
    pub on_give_up: OnGiveUp,
    /// Every worker's default rotation mode (each [`WorkerPlan::on_rotation`] is the
    /// one that applies).
    pub on_rotation: OnRotation,
    /// Probe keys before starting.
    pub probe: bool,
}

/// One source, checked for its kind.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// 0-based position in the file, for messages ("source #2").
    pub index: usize,
    /// What to load.
    pub kind: SourceKindPlan,
    /// A missing optional source is skipped.
    pub optional: bool,
    /// True when this source came from the default list (no `[[source]]` given).
    pub implicit: bool,
    /// Largest file this source reads (`max_size`): a key file of a `dir` source,
    /// or a dotenv file.
    pub max_size: u64,
}

/// The per-kind settings of a source.
#[derive(Debug, Clone)]
pub enum SourceKindPlan {
    /// A dotenv file.
    Dotenv {
        /// Absolute path.
        path: PathBuf,
    },
    /// A directory, one file per key.
    Dir {
        /// Absolute path.
        path: PathBuf,
    },
    /// A command (argv, no shell).
    Command {
        /// argv.
        argv: Vec<String>,
        /// stdout format.
        format: CommandFormat,
        /// JSON pointer into the output.
        json_pointer: Option<String>,
        /// Kill after this long.
        timeout: Duration,
        /// `env` patterns, as written: agentsup's variables the command gets
        /// besides the `[env] inherit` set.
        env_patterns: Vec<String>,
        /// Compiled `env` globs.
        env: GlobSet,
        /// Run again this often (`refresh`).
        refresh: Option<Duration>,
        /// Where the output holds a lease length in seconds (`ttl_pointer`).
        ttl_pointer: Option<String>,
        /// Who the helper runs as (`user`/`group`); agentsup's own uid if `None`.
        /// (Boxed: rare, and the variant is already the largest.)
        creds: Option<Box<crate::sys::creds::Creds>>,
    },
    /// agentsup's own environment.
    Env,
}

impl SourcePlan {
    /// Short description for reports: `dotenv .env`, `dir /run/secrets`, …
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            SourceKindPlan::Dotenv { path } => format!("dotenv {}", path.display()),
            SourceKindPlan::Dir { path } => format!("dir {}", path.display()),
            SourceKindPlan::Command { argv, .. } => {
                format!("command `{}`", argv.first().map_or("", String::as_str))
            }
            SourceKindPlan::Env => "process env".to_string(),
        }
    }
}

/// `[keys.NAME]`, compiled.
#[derive(Debug, Clone, Default)]
pub struct KeyRulePlan {
    /// Provider shape to check.
    pub provider: Option<Provider>,
    /// Extra regex (source text kept for messages).
    pub pattern: Option<(String, Regex)>,
    /// Forced secret-ness.
    pub secret: Option<bool>,
}

/// Backoff settings (SPEC 5).
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPlan {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// Growth factor.
    pub multiplier: f64,
    /// ± fraction.
    pub jitter: f64,
    /// A run this long resets the growth.
    pub reset_after: Duration,
}

impl Default for BackoffPlan {
    /// SPEC 2's defaults: 1 s, ×2, capped at 60 s, ±10 %, reset after a 30 s run.
    fn default() -> Self {
        BackoffPlan {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Auth-failure settings (SPEC 5).
#[derive(Debug, Clone)]
pub struct AuthPlan {
    /// Exit statuses that mean "credential rejected".
    pub exit_codes: Vec<i32>,
    /// Extra regexes over the output tail.
    pub patterns: Vec<Regex>,
    /// Backoff cap while the credential stays rejected.
    pub max_delay: Duration,
}

impl Default for AuthPlan {
    /// Exit status 77 means "credential rejected"; retries back off up to 5 minutes.
    fn default() -> Self {
        AuthPlan {
            exit_codes: vec![77],
            patterns: Vec::new(),
            max_delay: Duration::from_secs(300),
        }
    }
}

/// Fork-mode settings (SPEC 6).
#[derive(Debug, Clone)]
pub struct ForkPlan {
    /// Modules the template imports.
    pub preload: Vec<String>,
    /// `python -m` target.
    pub module: Option<String>,
    /// Script path (absolute).
    pub script: Option<PathBuf>,
    /// `sys.argv[1:]`.
    pub args: Vec<String>,
    /// Interpreter, looked up on the worker's PATH.
    pub python: String,
}

/// One worker, checked.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Unique name.
    pub name: String,
    /// 1-based line of the `[[worker]]` entry, for messages.
    pub line: usize,
    /// argv (empty only in fork mode).
    pub command: Vec<String>,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Replica count, ≥ 1.
    pub replicas: u32,
    /// Exact key names: required.
    pub keys_exact: Vec<String>,
    /// Key globs as written: optional extras.
    pub key_globs: Vec<String>,
    /// Compiled key globs.
    pub key_globset: GlobSet,
    /// The worker's own vars.
    pub vars: BTreeMap<String, String>,
    /// Restart policy.
    pub restart: RestartMode,
    /// Stop signal number.
    pub stop_signal: nix::sys::signal::Signal,
    /// Grace before SIGKILL.
    pub stop_timeout: Duration,
    /// True when the config sets `stop_timeout` (the default is never warned about).
    pub stop_timeout_set: bool,
    /// Who gets the stop signal (the SIGKILL always goes to the group).
    pub stop_target: crate::config::StopTarget,
    /// How running replicas take changed keys (the worker's, else `[supervisor]`'s).
    pub on_rotation: OnRotation,
    /// What `on_rotation = "signal"` sends.
    pub reload_signal: nix::sys::signal::Signal,
    /// How to tell that a replica is ready (`ready`), if set.
    pub ready: Option<crate::ready::ReadyPlan>,
    /// Start mode.
    pub start: StartMode,
    /// Fork settings when `start = "fork"`.
    pub fork: Option<ForkPlan>,
    /// Backoff.
    pub backoff: BackoffPlan,
    /// Consecutive crash-class runs before giving up.
    pub max_restarts: u32,
    /// Auth settings.
    pub auth: AuthPlan,
    /// The user and group the worker runs as (`user` / `group`), resolved; None
    /// runs it as agentsup's own.
    pub creds: Option<crate::sys::creds::Creds>,
}

impl WorkerPlan {
    /// True when `name` is one of the worker's keys, exact or by glob.
    pub(crate) fn declares(&self, name: &str) -> bool {
        self.keys_exact.iter().any(|k| k == name) || self.key_globset.is_match(name)
    }
}

impl Plan {
    /// Reads, parses and checks the config file.
    pub fn load(path: &Path) -> Result<Plan, Error> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::ConfigUnreadable {
            path: path.to_path_buf(),
            origin: None,
            cause,
        })?;
        Plan::from_text(path, &text)
    }

    /// Parses and checks config text that was read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Plan, Error> {
        let file = config::parse(path, text).map_err(|e| Error::Config(vec![e]))?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let config_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut b = build::Builder {
            path,
            text,
            dir: config_dir.clone(),
            errors: Vec::new(),
        };
        let plan = b.build(file, path.to_path_buf(), config_dir);
        if b.errors.is_empty() {
            Ok(plan)
        } else {
            Err(Error::Config(b.errors))
        }
    }

    /// The worker named `name`.
    pub(crate) fn worker(&self, name: &str) -> Option<&WorkerPlan> {
        self.workers.iter().find(|w| w.name == name)
    }

    /// The worker named `name`, or a usage error naming the config's workers and
    /// the nearest one: "unknown worker "plannr"; supervisor.toml defines: planner,
    /// critic (did you mean "planner"?)".
    pub(crate) fn require_worker(&self, name: &str) -> Result<&WorkerPlan, Error> {
        self.worker(name).ok_or_else(|| self.unknown_worker(name))
    }

    fn unknown_worker(&self, name: &str) -> Error {
        let names: Vec<&str> = self.workers.iter().map(|w| w.name.as_str()).collect();
        Error::UnknownWorker {
            name: name.to_string(),
            config: self.config_path.clone(),
            nearest: config::nearest(name, &names).map(str::to_string),
            known: names.into_iter().map(str::to_string).collect(),
        }
    }

    /// True when `name` is secret by rule, by name, or when `from_secret_source`.
    pub(crate) fn is_secret(&self, name: &str, from_secret_source: bool) -> bool {
        match self.key_rules.get(name).and_then(|r| r.secret) {
            Some(forced) => forced,
            None => from_secret_source || crate::secret::name_looks_secret(name),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

/// True for a POSIX-style variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for a variable name or a glob over names (`LANGSMITH_*`, `LC_?`, `[AB]_KEY`).
pub(crate) fn is_name_or_glob(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?' | '[' | ']' | '!' | '-')
        })
        && !s.starts_with(|c: char| c.is_ascii_digit())
}
