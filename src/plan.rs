//! The checked, resolved form of `supervisor.toml`.
//!
//! [`Plan::load`] reads the file, parses it with [`crate::config`], and then checks
//! everything serde cannot: per-kind source fields, duplicate worker names, empty
//! commands, replica counts, key names and globs, regexes, fork settings. It
//! collects **every** problem before failing, as a linter does, so a user fixes the
//! file in one pass. Paths are resolved against the config file's directory
//! (SPEC 1). Everything downstream takes only a [`Plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;
use toml::Spanned;

use crate::config::{
    self, CommandFormat, ConfigFile, LogFormat, OnGiveUp, OnRotation, Provider, RestartMode,
    SourceKind, StartMode,
};
use crate::exit::{Error, Located};

/// Default `[env] inherit` when the table does not set it (SPEC 2).
pub const DEFAULT_INHERIT: &[&str] = &["PATH", "HOME", "LANG", "LC_*", "TZ"];

/// Where the config file was found, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `-c FILE`.
    Flag,
    /// `$AGENTSUP_CONFIG`.
    EnvVar,
    /// `./supervisor.toml`.
    Default,
}

/// Finds the config file: `-c`, then `$AGENTSUP_CONFIG`, then `./supervisor.toml`.
pub fn locate(flag: Option<&Path>, env_value: Option<&str>) -> (PathBuf, ConfigOrigin) {
    if let Some(p) = flag {
        return (p.to_path_buf(), ConfigOrigin::Flag);
    }
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        return (PathBuf::from(v), ConfigOrigin::EnvVar);
    }
    (PathBuf::from("supervisor.toml"), ConfigOrigin::Default)
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
    /// Rotation behaviour.
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
    },
    /// agentsup's own environment.
    Env,
}

impl SourcePlan {
    /// Short description for reports: `dotenv .env`, `dir /run/secrets`, …
    pub fn describe(&self) -> String {
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
}

impl WorkerPlan {
    /// True when `name` is one of the worker's keys, exact or by glob.
    pub fn declares(&self, name: &str) -> bool {
        self.keys_exact.iter().any(|k| k == name) || self.key_globset.is_match(name)
    }
}

impl Plan {
    /// Reads, parses and checks the config file.
    pub fn load(path: &Path) -> Result<Plan, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::ConfigNotFound(format!(
                "cannot read config {}: {e}; pass -c FILE, set AGENTSUP_CONFIG, or run from the directory holding supervisor.toml",
                path.display()
            ))
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
        let mut b = Builder {
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
    pub fn worker(&self, name: &str) -> Option<&WorkerPlan> {
        self.workers.iter().find(|w| w.name == name)
    }

    /// True when `name` is secret by rule, by name, or when `from_secret_source`.
    pub fn is_secret(&self, name: &str, from_secret_source: bool) -> bool {
        match self.key_rules.get(name).and_then(|r| r.secret) {
            Some(forced) => forced,
            None => from_secret_source || crate::secret::name_looks_secret(name),
        }
    }
}

struct Builder<'a> {
    path: &'a Path,
    text: &'a str,
    dir: PathBuf,
    errors: Vec<Located>,
}

impl Builder<'_> {
    fn err_at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, col) = config::line_col(self.text, span.start);
        self.errors.push(Located {
            path: self.path.to_path_buf(),
            line: Some(line),
            column: Some(col),
            message: message.into(),
        });
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn build(&mut self, file: ConfigFile, config_path: PathBuf, config_dir: PathBuf) -> Plan {
        let s = &file.supervisor;
        let supervisor = SupervisorPlan {
            shutdown_timeout: s.shutdown_timeout.map_or(Duration::from_secs(10), |d| d.0),
            log_format: s.log_format.unwrap_or_default(),
            health: s.health.as_ref().map(|h| h.get_ref().clone()),
            on_give_up: s.on_give_up.unwrap_or_default(),
            on_rotation: s.on_rotation.unwrap_or_default(),
            probe: s.probe.unwrap_or(false),
        };
        if let Some(h) = &s.health {
            if h.get_ref().parse::<std::net::SocketAddr>().is_err() {
                self.err_at(
                    h.span(),
                    format!(
                        "`health` must be an address like \"127.0.0.1:9464\" or \"0.0.0.0:9464\", got {:?}",
                        h.get_ref()
                    ),
                );
            }
        }

        let (inherit_patterns, inherit) = self.inherit(file.env.inherit.as_deref());
        let global_vars = self.vars(&file.env.vars, "[env] vars");
        let sources = self.sources(&file.sources);
        let key_rules = self.key_rules(&file.keys);
        let workers = self.workers(&file.workers);

        Plan {
            config_path,
            config_dir,
            supervisor,
            inherit_patterns,
            inherit,
            global_vars,
            worker_dotenv: file.env.worker_dotenv,
            sources,
            key_rules,
            workers,
        }
    }

    fn inherit(&mut self, given: Option<&[Spanned<String>]>) -> (Vec<String>, GlobSet) {
        let mut patterns = Vec::new();
        let mut builder = GlobSetBuilder::new();
        match given {
            None => {
                for p in DEFAULT_INHERIT {
                    patterns.push((*p).to_string());
                    builder.add(Glob::new(p).expect("default globs are valid"));
                }
            }
            Some(list) => {
                for p in list {
                    if !is_name_or_glob(p.get_ref()) {
                        self.err_at(
                            p.span(),
                            format!(
                                "`inherit` entry {:?} is not a variable name or glob (letters, digits, `_`, `*`, `?`, `[…]`)",
                                p.get_ref()
                            ),
                        );
                        continue;
                    }
                    match Glob::new(p.get_ref()) {
                        Ok(g) => {
                            builder.add(g);
                            patterns.push(p.get_ref().clone());
                        }
                        Err(e) => self.err_at(p.span(), format!("bad glob {:?}: {e}", p.get_ref())),
                    }
                }
            }
        }
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        (patterns, set)
    }

    fn vars(
        &mut self,
        vars: &BTreeMap<Spanned<String>, String>,
        what: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in vars {
            if !is_var_name(k.get_ref()) {
                self.err_at(
                    k.span(),
                    format!(
                        "{what}: {:?} is not a valid variable name (use letters, digits and `_`, not starting with a digit)",
                        k.get_ref()
                    ),
                );
                continue;
            }
            if v.contains('\0') {
                self.err_at(
                    k.span(),
                    format!(
                        "{what}: {} holds a NUL byte, which no process environment can carry",
                        k.get_ref()
                    ),
                );
                continue;
            }
            out.insert(k.get_ref().clone(), v.clone());
        }
        out
    }

    fn sources(&mut self, entries: &[Spanned<config::SourceEntry>]) -> Vec<SourcePlan> {
        if entries.is_empty() {
            // SPEC 2: `.env` (optional), then the process environment, so that a real
            // environment variable wins over the file (the dotenv convention).
            return vec![
                SourcePlan {
                    index: 0,
                    kind: SourceKindPlan::Dotenv {
                        path: self.dir.join(".env"),
                    },
                    optional: true,
                    implicit: true,
                },
                SourcePlan {
                    index: 1,
                    kind: SourceKindPlan::Env,
                    optional: false,
                    implicit: true,
                },
            ];
        }
        let mut out = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let span = entry.span();
            let e = entry.get_ref();
            let kind = *e.kind.get_ref();
            let unexpected = |b: &mut Self, field: &str, present: bool| {
                if present {
                    b.err_at(
                        span.clone(),
                        format!(
                            "source #{} (type = \"{kind}\") does not take `{field}`",
                            index + 1
                        ),
                    );
                }
            };
            let plan_kind = match kind {
                SourceKind::Dotenv | SourceKind::Dir => {
                    unexpected(self, "command", e.command.is_some());
                    unexpected(self, "format", e.format.is_some());
                    unexpected(self, "json_pointer", e.json_pointer.is_some());
                    unexpected(self, "timeout", e.timeout.is_some());
                    let Some(path) = &e.path else {
                        self.err_at(
                            span.clone(),
                            format!(
                                "source #{} (type = \"{kind}\") needs `path`, e.g. path = \"{}\"",
                                index + 1,
                                if kind == SourceKind::Dir {
                                    "/run/secrets"
                                } else {
                                    ".env"
                                }
                            ),
                        );
                        continue;
                    };
                    if path.get_ref().is_empty() {
                        self.err_at(path.span(), "`path` is empty");
                        continue;
                    }
                    let path = self.resolve(path.get_ref());
                    if kind == SourceKind::Dir {
                        SourceKindPlan::Dir { path }
                    } else {
                        SourceKindPlan::Dotenv { path }
                    }
                }
                SourceKind::Command => {
                    unexpected(self, "path", e.path.is_some());
                    let argv = match &e.command {
                        Some(c) if !c.get_ref().is_empty() && !c.get_ref()[0].is_empty() => {
                            c.get_ref().clone()
                        }
                        Some(c) => {
                            self.err_at(c.span(), "`command` is empty; give argv such as [\"vault\", \"kv\", \"get\", \"-format=json\", \"secret/agents\"]");
                            continue;
                        }
                        None => {
                            self.err_at(span.clone(), format!("source #{} (type = \"command\") needs `command`, an argv array (no shell)", index + 1));
                            continue;
                        }
                    };
                    let format = e.format.as_ref().map(|f| *f.get_ref()).unwrap_or_default();
                    if let Some(p) = &e.json_pointer {
                        if format != CommandFormat::Json {
                            self.err_at(p.span(), "`json_pointer` needs format = \"json\"");
                        } else if !(p.get_ref().is_empty() || p.get_ref().starts_with('/')) {
                            self.err_at(p.span(), format!("`json_pointer` {:?} must be empty or start with `/` (RFC 6901), e.g. \"/data/data\"", p.get_ref()));
                        }
                    }
                    SourceKindPlan::Command {
                        argv,
                        format,
                        json_pointer: e.json_pointer.as_ref().map(|p| p.get_ref().clone()),
                        timeout: e
                            .timeout
                            .as_ref()
                            .map_or(Duration::from_secs(10), |t| t.get_ref().0),
                    }
                }
                SourceKind::Env => {
                    unexpected(self, "path", e.path.is_some());
                    unexpected(self, "command", e.command.is_some());
                    unexpected(self, "format", e.format.is_some());
                    unexpected(self, "json_pointer", e.json_pointer.is_some());
                    unexpected(self, "timeout", e.timeout.is_some());
                    SourceKindPlan::Env
                }
            };
            out.push(SourcePlan {
                index,
                kind: plan_kind,
                optional: e.optional.unwrap_or(false),
                implicit: false,
            });
        }
        out
    }

    fn key_rules(
        &mut self,
        keys: &BTreeMap<Spanned<String>, config::KeyRule>,
    ) -> BTreeMap<String, KeyRulePlan> {
        let mut out = BTreeMap::new();
        for (name, rule) in keys {
            if !is_var_name(name.get_ref()) {
                self.err_at(
                    name.span(),
                    format!("[keys.{}]: not a valid variable name", name.get_ref()),
                );
                continue;
            }
            let pattern = match &rule.pattern {
                Some(p) => match Regex::new(p.get_ref()) {
                    Ok(r) => Some((p.get_ref().clone(), r)),
                    Err(e) => {
                        self.err_at(
                            p.span(),
                            format!(
                                "[keys.{}] pattern is not a valid regex: {}",
                                name.get_ref(),
                                first_line(&e.to_string())
                            ),
                        );
                        None
                    }
                },
                None => None,
            };
            out.insert(
                name.get_ref().clone(),
                KeyRulePlan {
                    provider: rule.provider,
                    pattern,
                    secret: rule.secret,
                },
            );
        }
        out
    }

    fn workers(&mut self, entries: &[Spanned<config::WorkerEntry>]) -> Vec<WorkerPlan> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for entry in entries {
            let w = entry.get_ref();
            let (line, _) = config::line_col(self.text, entry.span().start);
            let name = w.name.get_ref().clone();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.err_at(
                    w.name.span(),
                    format!("worker name {name:?} must be non-empty and use only letters, digits, `-` and `_` (it is used in log prefixes, metrics and AGENTSUP_WORKER)"),
                );
            } else if name == "agentsup" {
                self.err_at(
                    w.name.span(),
                    "worker name \"agentsup\" is reserved for the supervisor's own log lines",
                );
            }
            if let Some(first) = seen.get(&name) {
                self.err_at(
                    w.name.span(),
                    format!("duplicate worker name {name:?} (first defined at line {first}); names must be unique"),
                );
            } else {
                seen.insert(name.clone(), line);
            }
            let start = w.start.as_ref().map(|s| *s.get_ref()).unwrap_or_default();
            let command = match &w.command {
                Some(c) if c.get_ref().is_empty() || c.get_ref()[0].trim().is_empty() => {
                    self.err_at(c.span(), format!("worker {name:?}: `command` is empty; give argv such as [\"python3\", \"-m\", \"agents.planner\"]"));
                    Vec::new()
                }
                Some(c) => c.get_ref().clone(),
                None if start == StartMode::Spawn => {
                    self.err_at(w.name.span(), format!("worker {name:?} has no `command`; give argv such as [\"python3\", \"-m\", \"agents.planner\"]"));
                    Vec::new()
                }
                None => Vec::new(),
            };
            let cwd = match &w.cwd {
                Some(c) => self.resolve(c.get_ref()),
                None => self.dir.clone(),
            };
            let replicas = match &w.replicas {
                Some(r) if *r.get_ref() < 1 => {
                    self.err_at(
                        r.span(),
                        format!(
                            "worker {name:?}: replicas must be at least 1, got {}",
                            r.get_ref()
                        ),
                    );
                    1
                }
                Some(r) if *r.get_ref() > 10_000 => {
                    self.err_at(
                        r.span(),
                        format!(
                            "worker {name:?}: replicas {} is more than the 10000 agentsup supports",
                            r.get_ref()
                        ),
                    );
                    1
                }
                Some(r) => *r.get_ref() as u32,
                None => 1,
            };
            let mut keys_exact = Vec::new();
            let mut key_globs = Vec::new();
            let mut gb = GlobSetBuilder::new();
            let mut seen_keys = BTreeSet::new();
            for k in &w.keys {
                let key = k.get_ref();
                if !seen_keys.insert(key.clone()) {
                    continue;
                }
                if is_var_name(key) {
                    keys_exact.push(key.clone());
                } else if is_name_or_glob(key) {
                    match Glob::new(key) {
                        Ok(g) => {
                            gb.add(g);
                            key_globs.push(key.clone());
                        }
                        Err(e) => self.err_at(
                            k.span(),
                            format!("worker {name:?}: bad key glob {key:?}: {e}"),
                        ),
                    }
                } else {
                    self.err_at(
                        k.span(),
                        format!("worker {name:?}: keys entry {key:?} is not a valid variable name or glob (letters, digits, `_`, not starting with a digit; globs may use `*`, `?`, `[…]`)"),
                    );
                }
            }
            let key_globset = gb.build().unwrap_or_else(|_| GlobSet::empty());
            let vars = self.vars(&w.vars, &format!("worker {name:?} vars"));
            let b = w.backoff.as_ref();
            let backoff = BackoffPlan {
                initial: b
                    .and_then(|b| b.initial)
                    .map_or(Duration::from_secs(1), |d| d.0),
                max: b
                    .and_then(|b| b.max)
                    .map_or(Duration::from_secs(60), |d| d.0),
                multiplier: b
                    .and_then(|b| b.multiplier.as_ref())
                    .map_or(2.0, |m| *m.get_ref()),
                jitter: b
                    .and_then(|b| b.jitter.as_ref())
                    .map_or(0.1, |j| *j.get_ref()),
                reset_after: b
                    .and_then(|b| b.reset_after)
                    .map_or(Duration::from_secs(30), |d| d.0),
            };
            if let Some(m) = b.and_then(|b| b.multiplier.as_ref()) {
                if !(m.get_ref().is_finite() && *m.get_ref() >= 1.0) {
                    self.err_at(
                        m.span(),
                        format!(
                            "worker {name:?}: backoff multiplier must be ≥ 1.0, got {}",
                            m.get_ref()
                        ),
                    );
                }
            }
            if let Some(j) = b.and_then(|b| b.jitter.as_ref()) {
                if !(0.0..=1.0).contains(j.get_ref()) {
                    self.err_at(
                        j.span(),
                        format!(
                            "worker {name:?}: backoff jitter must be between 0.0 and 1.0, got {}",
                            j.get_ref()
                        ),
                    );
                }
            }
            if backoff.max < backoff.initial {
                self.err_at(
                    entry.span(),
                    format!(
                        "worker {name:?}: backoff max ({}) is smaller than initial ({})",
                        humantime::format_duration(backoff.max),
                        humantime::format_duration(backoff.initial)
                    ),
                );
            }
            let a = w.auth.as_ref();
            let mut patterns = Vec::new();
            for p in a.and_then(|a| a.patterns.as_ref()).into_iter().flatten() {
                match Regex::new(p.get_ref()) {
                    Ok(r) => patterns.push(r),
                    Err(e) => self.err_at(
                        p.span(),
                        format!(
                            "worker {name:?}: auth pattern is not a valid regex: {}",
                            first_line(&e.to_string())
                        ),
                    ),
                }
            }
            let auth = AuthPlan {
                exit_codes: a
                    .and_then(|a| a.exit_codes.clone())
                    .unwrap_or_else(|| vec![77]),
                patterns,
                max_delay: a
                    .and_then(|a| a.max_delay)
                    .map_or(Duration::from_secs(300), |d| d.0),
            };
            let fork = if start == StartMode::Fork {
                let span = w.start.as_ref().map_or(entry.span(), |s| s.span());
                match (&w.module, &w.script) {
                    (None, None) => {
                        self.err_at(span, format!("worker {name:?}: start = \"fork\" needs `module` (run as `python -m`) or `script`"));
                        None
                    }
                    (Some(_), Some(_)) => {
                        self.err_at(
                            span,
                            format!("worker {name:?}: give either `module` or `script`, not both"),
                        );
                        None
                    }
                    (module, script) => Some(ForkPlan {
                        preload: w.preload.clone().unwrap_or_default(),
                        module: module.clone(),
                        script: script.as_ref().map(|s| {
                            let p = Path::new(s);
                            if p.is_absolute() {
                                p.to_path_buf()
                            } else {
                                cwd.join(p)
                            }
                        }),
                        args: w.args.clone().unwrap_or_default(),
                        python: w.python.clone().unwrap_or_else(|| "python3".into()),
                    }),
                }
            } else {
                for (field, set) in [
                    ("preload", w.preload.is_some()),
                    ("module", w.module.is_some()),
                    ("script", w.script.is_some()),
                    ("args", w.args.is_some()),
                    ("python", w.python.is_some()),
                ] {
                    if set {
                        self.err_at(w.name.span(), format!("worker {name:?}: `{field}` only applies with start = \"fork\"; put arguments in `command` instead"));
                    }
                }
                None
            };
            out.push(WorkerPlan {
                name,
                line,
                command,
                cwd,
                replicas,
                keys_exact,
                key_globs,
                key_globset,
                vars,
                restart: w.restart.unwrap_or_default(),
                stop_signal: w
                    .stop_signal
                    .as_ref()
                    .map_or(nix::sys::signal::Signal::SIGTERM, |s| s.get_ref().0),
                stop_timeout: w.stop_timeout.map_or(Duration::from_secs(10), |d| d.0),
                start,
                fork,
                backoff,
                max_restarts: w.max_restarts.unwrap_or(10),
                auth,
            });
        }
        out
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
pub fn is_name_or_glob(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?' | '[' | ']' | '!' | '-')
        })
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, Vec<Located>> {
        Plan::from_text(Path::new("/tmp/x/supervisor.toml"), text).map_err(|e| match e {
            Error::Config(v) => v,
            other => panic!("{other}"),
        })
    }

    #[test]
    fn defaults_apply() {
        let p = plan("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\n").unwrap();
        assert_eq!(p.sources.len(), 2);
        let w = &p.workers[0];
        assert_eq!(w.replicas, 1);
        assert_eq!(w.cwd, Path::new("/tmp/x"));
        assert_eq!(w.auth.exit_codes, vec![77]);
        assert!(p.inherit.is_match("LC_ALL"));
    }

    #[test]
    fn collects_every_semantic_error() {
        let errs = plan(
            "[[worker]]\nname = \"a\"\ncommand = []\nreplicas = 0\nkeys = [\"OK_KEY\", \"bad key\"]\n\
             [[worker]]\nname = \"a\"\ncommand = [\"x\"]\nstart = \"fork\"\n\
             [keys.K]\npattern = \"(\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = text.join("\n");
        assert!(
            all.contains(":3:11: worker \"a\": `command` is empty"),
            "{all}"
        );
        assert!(
            all.contains(":4:12: worker \"a\": replicas must be at least 1"),
            "{all}"
        );
        assert!(
            all.contains("\"bad key\" is not a valid variable name or glob"),
            "{all}"
        );
        assert!(
            all.contains("duplicate worker name \"a\" (first defined at line 1)"),
            "{all}"
        );
        assert!(all.contains("start = \"fork\" needs `module`"), "{all}");
        assert!(
            all.contains("[keys.K] pattern is not a valid regex"),
            "{all}"
        );
    }

    #[test]
    fn source_fields_checked_per_kind() {
        let errs = plan("[[source]]\ntype = \"dir\"\n[[source]]\ntype = \"env\"\npath = \"x\"\n")
            .unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(all[0].contains("needs `path`"));
        assert!(all[1].contains("does not take `path`"));
    }

    #[test]
    fn names_and_globs() {
        assert!(is_var_name("OPENAI_API_KEY"));
        assert!(!is_var_name("1ABC"));
        assert!(!is_var_name("OPEN-AI"));
        assert!(is_name_or_glob("LANGSMITH_*"));
        assert!(!is_name_or_glob("A B"));
    }
}
