//! The checks serde cannot do, turning a [`ConfigFile`] into a [`Plan`]. Every
//! problem is collected (as a linter does) and located with file:line:col.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;
use toml::Spanned;

use super::*;
use crate::config::{self, CommandFormat, ConfigFile, SourceKind, StartMode};
use crate::diag::Located;

/// Shortest `refresh` of a `command` source: re-reads are at least
/// `supervisor::rotation::REREAD_MIN_INTERVAL` (3 s) apart whatever asks.
const MIN_REFRESH: Duration = Duration::from_secs(5);

pub(super) struct Builder<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) dir: PathBuf,
    pub(super) errors: Vec<Located>,
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

    pub(super) fn build(
        &mut self,
        file: ConfigFile,
        config_path: PathBuf,
        config_dir: PathBuf,
    ) -> Plan {
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
        let workers = self.workers(&file.workers, supervisor.on_rotation);

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
        match given {
            None => {
                let mut builder = GlobSetBuilder::new();
                for p in DEFAULT_INHERIT {
                    builder.add(Glob::new(p).expect("default globs are valid"));
                }
                let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
                (
                    DEFAULT_INHERIT.iter().map(|p| (*p).to_string()).collect(),
                    set,
                )
            }
            Some(list) => self.name_globs("inherit", list),
        }
    }

    /// A list of variable names or globs (`[env] inherit`, a command source's
    /// `env`), compiled; each bad entry is reported at its span.
    fn name_globs(&mut self, field: &str, list: &[Spanned<String>]) -> (Vec<String>, GlobSet) {
        let mut patterns = Vec::new();
        let mut builder = GlobSetBuilder::new();
        for p in list {
            if !is_name_or_glob(p.get_ref()) {
                self.err_at(
                    p.span(),
                    format!(
                        "`{field}` entry {:?} is not a variable name or glob (letters, digits, `_`, `*`, `?`, `[…]`)",
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

    /// `refresh` and `ttl_pointer` of a `command` source (issue 14), checked.
    fn refresh(
        &mut self,
        index: usize,
        e: &config::SourceEntry,
        format: CommandFormat,
    ) -> (Option<Duration>, Option<String>) {
        let refresh = e.refresh.as_ref().and_then(|r| {
            let d = r.get_ref().0;
            if d < MIN_REFRESH {
                self.err_at(
                    r.span(),
                    format!(
                        "source #{}: `refresh` must be at least {} (re-reads are paced that far apart anyway), e.g. refresh = \"5m\"",
                        index + 1,
                        humantime::format_duration(MIN_REFRESH)
                    ),
                );
                None
            } else {
                Some(d)
            }
        });
        let ttl = e.ttl_pointer.as_ref().and_then(|p| {
            if format != CommandFormat::Json {
                self.err_at(
                    p.span(),
                    "`ttl_pointer` needs format = \"json\" (it points into the command's JSON output)",
                );
                None
            } else if !p.get_ref().starts_with('/') {
                self.err_at(
                    p.span(),
                    format!(
                        "`ttl_pointer` {:?} must start with `/` (RFC 6901), e.g. \"/lease_duration\"",
                        p.get_ref()
                    ),
                );
                None
            } else {
                Some(p.get_ref().clone())
            }
        });
        (refresh, ttl)
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
                    max_size: super::size::DEFAULT_DOTENV_MAX,
                },
                SourcePlan {
                    index: 1,
                    kind: SourceKindPlan::Env,
                    optional: false,
                    implicit: true,
                    max_size: super::size::DEFAULT_MAX,
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
                    unexpected(self, "env", e.env.is_some());
                    unexpected(self, "format", e.format.is_some());
                    unexpected(self, "json_pointer", e.json_pointer.is_some());
                    unexpected(self, "timeout", e.timeout.is_some());
                    unexpected(self, "refresh", e.refresh.is_some());
                    unexpected(self, "ttl_pointer", e.ttl_pointer.is_some());
                    unexpected(self, "user", e.user.is_some());
                    unexpected(self, "group", e.group.is_some());
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
                    let (env_patterns, env) =
                        self.name_globs("env", e.env.as_deref().unwrap_or(&[]));
                    let (refresh, ttl_pointer) = self.refresh(index, e, format);
                    let creds = self
                        .resolve_creds(
                            &format!("source #{} (type = \"command\")", index + 1),
                            e.user.as_ref(),
                            e.group.as_ref(),
                        )
                        .map(Box::new);
                    SourceKindPlan::Command {
                        refresh,
                        ttl_pointer,
                        creds,
                        argv,
                        env_patterns,
                        env,
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
                    unexpected(self, "env", e.env.is_some());
                    unexpected(self, "refresh", e.refresh.is_some());
                    unexpected(self, "ttl_pointer", e.ttl_pointer.is_some());
                    unexpected(self, "user", e.user.is_some());
                    unexpected(self, "group", e.group.is_some());
                    SourceKindPlan::Env
                }
            };
            let default_max = if kind == SourceKind::Dotenv {
                super::size::DEFAULT_DOTENV_MAX
            } else {
                super::size::DEFAULT_MAX
            };
            let max_size = match &e.max_size {
                Some(m) if !matches!(kind, SourceKind::Dotenv | SourceKind::Dir) => {
                    self.err_at(
                        m.span(),
                        format!(
                            "`max_size` applies to dotenv and dir sources, not to type = \"{kind}\""
                        ),
                    );
                    default_max
                }
                Some(m) => match super::size::parse_size(m.get_ref()) {
                    Ok(n) => n,
                    Err(msg) => {
                        self.err_at(m.span(), format!("`max_size`: {msg}"));
                        default_max
                    }
                },
                None => default_max,
            };
            out.push(SourcePlan {
                index,
                kind: plan_kind,
                optional: e.optional.unwrap_or(false),
                implicit: false,
                max_size,
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

    /// `reload_signal`, which only `on_rotation = "signal"` sends: set with another
    /// mode it would silently do nothing, so that is an error.
    fn reload_signal(
        &mut self,
        name: &str,
        w: &config::WorkerEntry,
        default_rotation: config::OnRotation,
    ) -> nix::sys::signal::Signal {
        let mode = w
            .on_rotation
            .as_ref()
            .map_or(default_rotation, |r| *r.get_ref());
        match &w.reload_signal {
            Some(s) if mode != config::OnRotation::Signal => {
                self.err_at(
                    s.span(),
                    format!(
                        "worker {name:?}: `reload_signal` is only sent with on_rotation = \"signal\" (this worker's is {:?}); set on_rotation = \"signal\" or remove it",
                        mode.as_str()
                    ),
                );
                nix::sys::signal::Signal::SIGHUP
            }
            Some(s)
                if matches!(
                    s.get_ref().0,
                    nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
                ) =>
            {
                self.err_at(
                    s.span(),
                    format!("worker {name:?}: `reload_signal` cannot be SIGKILL or SIGSTOP (no process can handle them); use SIGHUP or SIGUSR1"),
                );
                nix::sys::signal::Signal::SIGHUP
            }
            Some(s) => s.get_ref().0,
            None => nix::sys::signal::Signal::SIGHUP,
        }
    }

    /// `ready = { … }`: exactly one probe, each checked.
    fn ready(
        &mut self,
        name: &str,
        entry: &Spanned<config::ReadyEntry>,
    ) -> Option<crate::ready::ReadyPlan> {
        use crate::ready::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Probe, ReadyPlan};
        let r = entry.get_ref();
        let set = [
            r.http.is_some(),
            r.exec.is_some(),
            r.log.is_some(),
            r.notify.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if set != 1 {
            self.err_at(
                entry.span(),
                format!(
                    "worker {name:?}: `ready` takes exactly one of `http`, `exec`, `log`, `notify` (found {set}), e.g. ready = {{ http = \"http://127.0.0.1:8000/healthz\" }}"
                ),
            );
            return None;
        }
        let probe = if let Some(u) = &r.http {
            // `{replica}` stands for a digit while the URL is checked.
            if let Err(e) = crate::ready::check_url(&crate::ready::for_replica(u.get_ref(), 0)) {
                self.err_at(u.span(), format!("worker {name:?}: ready http: {e}"));
                return None;
            }
            Probe::Http(u.get_ref().clone())
        } else if let Some(argv) = &r.exec {
            if argv.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
                self.err_at(
                    argv.span(),
                    format!(
                        "worker {name:?}: ready exec is empty; give argv such as [\"pg_isready\"]"
                    ),
                );
                return None;
            }
            Probe::Exec(argv.get_ref().clone())
        } else if let Some(re) = &r.log {
            match Regex::new(re.get_ref()) {
                Ok(re) => Probe::Log(re),
                Err(e) => {
                    self.err_at(
                        re.span(),
                        format!(
                            "worker {name:?}: ready log is not a valid regex: {}",
                            first_line(&e.to_string())
                        ),
                    );
                    return None;
                }
            }
        } else {
            let n = r.notify.as_ref()?;
            if !*n.get_ref() {
                self.err_at(
                    n.span(),
                    format!(
                        "worker {name:?}: `notify = false` is no probe; remove `ready` instead"
                    ),
                );
                return None;
            }
            Probe::Notify
        };
        if matches!(probe, Probe::Log(_) | Probe::Notify) && r.interval.is_some() {
            self.err_at(
                entry.span(),
                format!("worker {name:?}: `interval` applies to ready http and exec probes only"),
            );
        }
        let interval = r.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        if interval < std::time::Duration::from_millis(100) {
            self.err_at(
                entry.span(),
                format!("worker {name:?}: ready `interval` must be at least 100ms"),
            );
        }
        Some(ReadyPlan {
            probe,
            timeout: r.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            interval: interval.max(std::time::Duration::from_millis(100)),
        })
    }

    fn workers(
        &mut self,
        entries: &[Spanned<config::WorkerEntry>],
        default_rotation: config::OnRotation,
    ) -> Vec<WorkerPlan> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        // Lines counted on from the previous worker, not from the top of the file
        // each time: that was quadratic (10,000 workers took seconds).
        let (mut at, mut line) = (0, 1);
        for entry in entries {
            let w = entry.get_ref();
            let start = entry.span().start.min(self.text.len());
            if start >= at {
                line += self.text[at..start].matches('\n').count();
            } else {
                line = config::line_col(self.text, start).0;
            }
            at = start;
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
            let dflt = BackoffPlan::default();
            let backoff = BackoffPlan {
                initial: b.and_then(|b| b.initial).map_or(dflt.initial, |d| d.0),
                max: b.and_then(|b| b.max).map_or(dflt.max, |d| d.0),
                multiplier: b
                    .and_then(|b| b.multiplier.as_ref())
                    .map_or(dflt.multiplier, |m| *m.get_ref()),
                jitter: b
                    .and_then(|b| b.jitter.as_ref())
                    .map_or(dflt.jitter, |j| *j.get_ref()),
                reset_after: b
                    .and_then(|b| b.reset_after)
                    .map_or(dflt.reset_after, |d| d.0),
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
            let dflt = AuthPlan::default();
            let auth = AuthPlan {
                exit_codes: a
                    .and_then(|a| a.exit_codes.clone())
                    .unwrap_or(dflt.exit_codes),
                patterns,
                max_delay: a.and_then(|a| a.max_delay).map_or(dflt.max_delay, |d| d.0),
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
            let creds = self.creds(&name, w, start);
            let reload_signal = self.reload_signal(&name, w, default_rotation);
            let ready = w.ready.as_ref().and_then(|r| self.ready(&name, r));
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
                stop_timeout_set: w.stop_timeout.is_some(),
                stop_target: w.stop_target.unwrap_or_default(),
                on_rotation: w
                    .on_rotation
                    .as_ref()
                    .map_or(default_rotation, |r| *r.get_ref()),
                reload_signal,
                ready,
                start,
                fork,
                backoff,
                max_restarts: w.max_restarts.unwrap_or(10),
                auth,
                creds,
            });
        }
        out
    }

    /// Resolves a worker's `user` / `group` (issue 12): an unknown name, or a
    /// switch agentsup is not privileged to make, is an error at the entry's line.
    fn creds(
        &mut self,
        name: &str,
        w: &config::WorkerEntry,
        start: StartMode,
    ) -> Option<crate::sys::creds::Creds> {
        if start == StartMode::Fork {
            if let Some(span) = w
                .user
                .as_ref()
                .map(|u| u.span())
                .or(w.group.as_ref().map(|g| g.span()))
            {
                self.err_at(
                    span,
                    format!("worker {name:?}: `user` and `group` are not supported with start = \"fork\" (the replicas are forked from one template process); use start = \"spawn\" with `command`"),
                );
            }
            return None;
        }
        self.resolve_creds(
            &format!("worker {name:?}"),
            w.user.as_ref(),
            w.group.as_ref(),
        )
    }

    /// Resolves a `user` / `group` pair (a worker's, a command source's) for
    /// `what`; an error is reported at the entry's line.
    fn resolve_creds(
        &mut self,
        what: &str,
        user: Option<&Spanned<crate::sys::creds::IdSpec>>,
        group: Option<&Spanned<crate::sys::creds::IdSpec>>,
    ) -> Option<crate::sys::creds::Creds> {
        let span = user.map(|u| u.span()).or(group.map(|g| g.span()))?;
        match crate::sys::creds::resolve(user.map(|u| u.get_ref()), group.map(|g| g.get_ref())) {
            Ok(creds) => creds,
            Err(e) => {
                self.err_at(span, format!("{what}: {e}"));
                None
            }
        }
    }
}
