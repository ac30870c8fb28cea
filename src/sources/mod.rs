//! Loading every secret source into one [`Snapshot`] (SPEC 2, 3).
//!
//! Sources are read in their declared order and a later source overrides an earlier
//! one. Each value keeps its [`Provenance`] so reports can say `.env:3` or
//! `/run/secrets/OPENAI_API_KEY`. Loading never reads agentsup's environment
//! directly: the caller passes a [`ProcessEnv`] captured once at start-up, which keeps
//! this module pure enough to test and guarantees "read once" (SPEC 3).
//!
//! Problems are collected, not thrown: a missing required file, a malformed line
//! and a failing command all become [`SourceProblem`]s so `check` can report them
//! together with the key findings.

pub mod command;
pub(crate) mod dir;
pub mod dotenv;
pub(crate) mod safe_read;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::plan::{Plan, SourceKindPlan, SourcePlan};
use crate::secret::{Provenance, Sensitive};

pub(crate) use crate::diag::Severity;
pub use command::{Captured, CommandRunner};

/// agentsup's own environment, captured once at start-up (non-UTF-8 entries are
/// dropped and counted).
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    /// Variables by name.
    pub vars: BTreeMap<String, Sensitive>,
    /// Names of variables that were not valid UTF-8 and were skipped.
    pub skipped_non_utf8: Vec<String>,
}

/// agentsup's environment as it started (see [`ProcessEnv::capture_at_start`]).
static AT_START: std::sync::OnceLock<ProcessEnv> = std::sync::OnceLock::new();

impl ProcessEnv {
    /// Captures the environment once, first thing in `main`, before the secret
    /// values are wiped out of the process's environment block
    /// ([`crate::sys::environ`]); every later [`ProcessEnv::capture`] returns
    /// this copy.
    pub fn capture_at_start() -> &'static ProcessEnv {
        AT_START.get_or_init(ProcessEnv::read_now)
    }

    /// agentsup's environment: as it started, when `main` captured it, else
    /// (library use, tests) as it is now.
    pub(crate) fn capture() -> ProcessEnv {
        AT_START.get().cloned().unwrap_or_else(ProcessEnv::read_now)
    }

    fn read_now() -> ProcessEnv {
        let mut env = ProcessEnv::default();
        for (k, v) in std::env::vars_os() {
            match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => {
                    env.vars.insert(k, Sensitive::new(v));
                }
                (Ok(k), Err(_)) => env.skipped_non_utf8.push(k),
                (Err(k), _) => env.skipped_non_utf8.push(k.to_string_lossy().into_owned()),
            }
        }
        env
    }

    /// Builds one from pairs (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> ProcessEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        ProcessEnv {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), Sensitive::new(v)))
                .collect(),
            skipped_non_utf8: Vec::new(),
        }
    }

    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Sensitive> {
        self.vars.get(name)
    }
}

/// A resolved value and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Variable name.
    pub name: String,
    /// The value.
    pub value: Sensitive,
    /// Where it came from.
    pub provenance: Provenance,
    /// Index of the source in the plan.
    pub source_index: usize,
    /// How it was quoted in a dotenv file (checks use it for "kept quotes").
    pub quote: Option<dotenv::Quote>,
    /// Raw-text notes from the dotenv parser (unquoted `#`, `$`, …).
    pub notes: Vec<dotenv::RecordNote>,
}

/// A problem met while loading a source. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    /// Error or warning.
    pub severity: Severity,
    /// `path:line`, a file, or a source description.
    pub location: String,
    /// The key concerned, when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// What happened to one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceStatus {
    /// Read; this many values.
    Loaded(usize),
    /// Optional and absent.
    Missing,
    /// Could not be read (see the problems).
    Failed,
}

/// One line of the "sources" part of a report.
#[derive(Debug, Clone)]
pub struct SourceSummary {
    /// Position in the plan.
    pub index: usize,
    /// `dotenv /app/.env`, …
    pub description: String,
    /// Outcome.
    pub status: SourceStatus,
}

/// Everything the sources hold, merged (later wins), with provenance.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The effective value of each name.
    pub values: BTreeMap<String, Entry>,
    /// Earlier values that a later source replaced (for "also set in …" hints).
    pub overridden: Vec<Entry>,
    /// Load problems.
    pub problems: Vec<SourceProblem>,
    /// Per-source outcome, in order.
    pub summaries: Vec<SourceSummary>,
    /// The lease each `command` source with `ttl_pointer` announced, by source
    /// index (`None`: its output held none). Drives its refresh (issue 14).
    pub leases: BTreeMap<usize, Option<std::time::Duration>>,
}

impl Snapshot {
    /// The effective entry for `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.values.get(name)
    }

    /// True when loading produced an error-level problem.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// Every name any source holds (effective or overridden), for near-miss hints.
    pub(crate) fn all_names(&self) -> BTreeSet<&str> {
        self.values
            .keys()
            .map(String::as_str)
            .chain(self.overridden.iter().map(|e| e.name.as_str()))
            .collect()
    }

    fn insert(&mut self, entry: Entry) {
        if let Some(old) = self.values.insert(entry.name.clone(), entry) {
            self.overridden.push(old);
        }
    }
}

/// Context a load needs besides the plan.
pub struct LoadContext<'a> {
    /// agentsup's environment, captured once.
    pub process_env: &'a ProcessEnv,
    /// How `command` sources are run (directly in `check`, via the reaper in `run`).
    pub runner: &'a dyn CommandRunner,
    /// Learns every value a `command` source prints, as soon as it is parsed and
    /// before anything about the command is reported (usually
    /// [`crate::redact::global`]).
    pub redactor: &'a crate::redact::SharedRedactor,
}

/// Loads every source of the plan, then applies `*_FILE` indirection for the keys
/// the workers declare (SPEC 3).
pub fn load_all(plan: &Plan, ctx: &LoadContext<'_>) -> Snapshot {
    let mut snap = Snapshot::default();
    for source in &plan.sources {
        let before = snap.problems.len();
        let status = load_one(source, plan, ctx, &mut snap);
        let failed_now = snap.problems[before..]
            .iter()
            .any(|p| p.severity == Severity::Error);
        snap.summaries.push(SourceSummary {
            index: source.index,
            description: describe_relative(source, &plan.config_dir),
            status: if failed_now && status == SourceStatus::Loaded(0) {
                SourceStatus::Failed
            } else {
                status
            },
        });
    }
    let declared: BTreeSet<&str> = plan
        .workers
        .iter()
        .flat_map(|w| w.keys_exact.iter().map(String::as_str))
        .collect();
    apply_file_indirection(&mut snap, &declared, &plan.config_dir);
    snap
}

fn describe_relative(source: &SourcePlan, base: &Path) -> String {
    let rel = |p: &Path| -> String {
        let shown = p.strip_prefix(base).unwrap_or(p);
        crate::paths::tidy(shown).display().to_string()
    };
    match &source.kind {
        SourceKindPlan::Dotenv { path } => format!("dotenv {}", rel(path)),
        SourceKindPlan::Dir { path } => format!("dir {}", rel(path)),
        _ => source.describe(),
    }
}

fn load_one(
    source: &SourcePlan,
    plan: &Plan,
    ctx: &LoadContext<'_>,
    snap: &mut Snapshot,
) -> SourceStatus {
    match &source.kind {
        SourceKindPlan::Dotenv { path } => load_dotenv(source, path, plan, snap),
        SourceKindPlan::Dir { path } => match dir::load(path, source.optional, source.max_size) {
            Ok(Some(loaded)) => {
                let n = loaded.entries.len();
                // A file that could not be read (a FIFO, a device, too big) fails
                // the run only if a worker needs that key.
                snap.problems
                    .extend(loaded.problems.into_iter().map(|mut p| {
                        if let Some(key) = &p.key {
                            if !plan.workers.iter().any(|w| w.declares(key)) {
                                p.severity = Severity::Warning;
                                p.message.push_str(
                                    "; no worker declares this key, so this is only a warning",
                                );
                            }
                        }
                        p
                    }));
                for (name, value, file) in loaded.entries {
                    snap.insert(Entry {
                        name,
                        value,
                        provenance: Provenance::SecretFile { path: file },
                        source_index: source.index,
                        quote: None,
                        notes: Vec::new(),
                    });
                }
                SourceStatus::Loaded(n)
            }
            Ok(None) => SourceStatus::Missing,
            Err(problem) => {
                snap.problems.push(problem);
                SourceStatus::Failed
            }
        },
        SourceKindPlan::Command {
            argv,
            format,
            json_pointer,
            timeout,
            env,
            ttl_pointer,
            creds,
            ..
        } => {
            let helper_env =
                command::helper_env(ctx.process_env, &plan.inherit, env, creds.as_deref());
            let known: Vec<(String, Sensitive)> = snap
                .values
                .values()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
            let spec = command::CommandSpec {
                argv,
                format: *format,
                json_pointer: json_pointer.as_deref(),
                timeout: *timeout,
                cwd: &plan.config_dir,
                env: &helper_env,
                ttl_pointer: ttl_pointer.as_deref(),
                creds: creds.as_deref(),
            };
            match command::load(&spec, ctx, &known) {
                Ok(loaded) => {
                    let n = loaded.entries.len();
                    if ttl_pointer.is_some() {
                        snap.leases.insert(source.index, loaded.lease);
                    }
                    snap.problems.extend(loaded.problems);
                    for (name, value, quote, notes) in loaded.entries {
                        snap.insert(Entry {
                            name,
                            value,
                            provenance: Provenance::Command {
                                program: argv[0].clone(),
                            },
                            source_index: source.index,
                            quote,
                            notes,
                        });
                    }
                    SourceStatus::Loaded(n)
                }
                Err(problem) => {
                    snap.problems.push(problem);
                    SourceStatus::Failed
                }
            }
        }
        SourceKindPlan::Env => {
            for (name, value) in &ctx.process_env.vars {
                snap.insert(Entry {
                    name: name.clone(),
                    value: value.clone(),
                    provenance: Provenance::ProcessEnv,
                    source_index: source.index,
                    quote: None,
                    notes: Vec::new(),
                });
            }
            SourceStatus::Loaded(ctx.process_env.vars.len())
        }
    }
}

fn load_dotenv(source: &SourcePlan, path: &Path, plan: &Plan, snap: &mut Snapshot) -> SourceStatus {
    let shown = crate::paths::tidy(path.strip_prefix(&plan.config_dir).unwrap_or(path));
    // A dangling link counts as missing, as it did for `std::fs::read`.
    let missing = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(e),
        _ => None,
    };
    let read = match missing {
        Some(_) if source.optional => return SourceStatus::Missing,
        Some(e) => Err(format!(
            "cannot read dotenv file: {e}; create it, fix `path`, or mark the source `optional = true`"
        )),
        None => safe_read::read_regular(path, None, source.max_size)
            .map_err(|reason| format!("dotenv file {reason}")),
    };
    let bytes = match read {
        Ok(b) => b,
        Err(message) => {
            snap.problems.push(SourceProblem {
                severity: Severity::Error,
                location: shown.display().to_string(),
                key: None,
                message,
            });
            return SourceStatus::Failed;
        }
    };
    let parsed = dotenv::parse(&bytes);
    if parsed.bom {
        snap.problems.push(SourceProblem {
            severity: Severity::Warning,
            location: format!("{}:1", shown.display()),
            key: None,
            message: "file starts with a UTF-8 byte-order mark (BOM); agentsup strips it, but python-dotenv ≤ 1.2.2 loses the first key: save the file without BOM".into(),
        });
    }
    for e in &parsed.errors {
        snap.problems.push(SourceProblem {
            severity: Severity::Error,
            location: format!("{}:{}", shown.display(), e.line),
            key: e.key.clone(),
            message: e.reason.clone(),
        });
    }
    for d in &parsed.duplicates {
        snap.problems.push(SourceProblem {
            severity: Severity::Warning,
            location: format!("{}:{}", shown.display(), d.line),
            key: Some(d.key.clone()),
            message: format!(
                "{} is set again (first at line {}); the last value wins in agentsup, python-dotenv and Node, but dotenvy's default keeps the first: remove one",
                d.key, d.first_line
            ),
        });
    }
    let mut n = 0;
    for r in parsed.effective() {
        n += 1;
        snap.insert(Entry {
            name: r.key.clone(),
            value: r.value.clone(),
            provenance: Provenance::Dotenv {
                path: shown.clone(),
                line: r.line,
            },
            source_index: source.index,
            quote: Some(r.quote),
            notes: r.notes.clone(),
        });
    }
    SourceStatus::Loaded(n)
}

/// `X_FILE` → `X` for declared keys that are otherwise unset (SPEC 3). The file's
/// content loses one trailing newline, as with Docker secrets.
fn apply_file_indirection(snap: &mut Snapshot, declared: &BTreeSet<&str>, base: &Path) {
    for key in declared {
        if snap.values.contains_key(*key) {
            continue;
        }
        let via = format!("{key}_FILE");
        let Some(pointer) = snap.values.get(&via).cloned() else {
            continue;
        };
        let raw = pointer.value.expose().trim();
        if raw.is_empty() {
            continue;
        }
        let path = if Path::new(raw).is_absolute() {
            PathBuf::from(raw)
        } else {
            base.join(raw)
        };
        match dir::read_secret_file(&path, None, safe_read::DEFAULT_MAX) {
            Ok(value) => snap.insert(Entry {
                name: (*key).to_string(),
                value,
                provenance: Provenance::FileIndirection {
                    via: via.clone(),
                    via_source: Box::new(pointer.provenance.clone()),
                    path,
                },
                source_index: pointer.source_index,
                quote: None,
                notes: Vec::new(),
            }),
            Err(reason) => snap.problems.push(SourceProblem {
                severity: Severity::Error,
                location: pointer.provenance.to_string(),
                key: Some((*key).to_string()),
                // The path is not printed: a key pasted into `X_FILE` instead of
                // a path is a common mistake, and then the "path" is the secret.
                message: format!(
                    "{via} ({}) does not name a readable file ({reason}); it must hold the path of a file containing {key} (its value, {} chars, is not shown)",
                    pointer.provenance,
                    pointer.value.len()
                ),
            }),
        }
    }
}
