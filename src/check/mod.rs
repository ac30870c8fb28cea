//! The checks that run before anything starts, and `agentsup check` (SPEC 4).
//!
//! [`run`] looks at what every selected worker would actually get, by building
//! its environment with [`crate::env::build`], and checks each exact key it
//! declares: present, not empty, no stray whitespace, control characters, BOM or
//! kept quotes, not a placeholder, the provider's shape, the `pattern` rule. It
//! also turns source problems into findings, suggests near-miss names, checks the
//! Azure endpoint and API version, and warns about a worker `.env` that agentsup
//! does not read. Like a linter it collects every finding before reporting.
//!
//! A finding never holds a value or any part of one: messages are built from key
//! names, provenance (`.env:2`), fixed descriptions ("looks like an Anthropic key
//! (it starts with `sk-ant-`)") and lengths. Values are compared, never copied.
//!
//! Layout: `rules` holds the pure per-value rules, `provider` the key shapes and
//! base-URL classes, `names` the name matching, `worker` the checks about a
//! worker as a whole, `preflight` whether each worker's command can start at all,
//! `report` the text and JSON rendering; this file decides what
//! to check for whom and merges findings that several workers share.

mod helper;
mod hit;
mod input;
mod names;
mod placeholder;
pub(crate) mod preflight;
mod provider;
mod report;
mod rules;
mod worker;

use std::path::PathBuf;

pub(crate) use crate::diag::Finding;
use crate::env::{self, BuiltEnv, EnvVar};
use crate::plan::{Plan, SourceKindPlan, WorkerPlan};
use crate::sources::{ProcessEnv, Severity, Snapshot, SourceProblem, SourceSummary};

use input::{Origin, ValueInput};
use provider::{Family, Host};

/// One selected worker, for the report header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerSummary {
    /// Its name.
    pub name: String,
    /// Exact keys it declares (required, checked).
    pub keys: Vec<String>,
    /// Key globs it declares (optional extras, not checked).
    pub globs: Vec<String>,
}

/// Everything `check` found, plus what it looked at.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// The config file, as given.
    pub config: PathBuf,
    /// Each source and how loading it went, in order.
    pub sources: Vec<SourceSummary>,
    /// The workers checked.
    pub workers: Vec<WorkerSummary>,
    /// Distinct exact keys checked across those workers.
    pub keys_checked: usize,
    /// Findings, grouped: source problems first, then by key in declaration order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Number of error findings.
    pub(crate) fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of warning findings.
    pub(crate) fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    /// True when anything must stop `run` (exit 78).
    pub(crate) fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Runs every check for the selected workers, given with their environments
/// ([`env::for_workers`]: every worker of the plan, or the selection of `exec` and
/// `run --only`).
pub(crate) fn run(
    plan: &Plan,
    snapshot: &Snapshot,
    process_env: &ProcessEnv,
    envs: &[env::WorkerEnv<'_>],
) -> Report {
    let selected: Vec<&WorkerPlan> = envs.iter().map(|(w, _)| *w).collect();
    let mut key_order: Vec<String> = Vec::new();
    for w in &selected {
        for k in &w.keys_exact {
            if !key_order.contains(k) {
                key_order.push(k.clone());
            }
        }
    }
    let ctx = Ctx {
        plan,
        snapshot,
        process_env,
        has_env_source: plan
            .sources
            .iter()
            .any(|s| matches!(s.kind, SourceKindPlan::Env)),
    };

    let mut out = Collector::default();
    for p in &snapshot.problems {
        out.push(source_finding(p, &selected));
    }
    out.extend(helper::findings(plan));
    out.extend(names::inherited_secrets(plan, process_env));
    for (w, built) in envs {
        // Values matched only by a glob are optional and not value-checked, except
        // for a NUL byte: no process environment can carry one, so the worker could
        // not even start (it would crash-loop with a message naming no variable).
        for (name, var) in &built.vars {
            if !w.keys_exact.contains(name)
                && w.key_globset.is_match(name)
                && var.value.expose().contains('\0')
            {
                out.push(Finding {
                    severity: Severity::Error,
                    code: "control-char",
                    key: Some(name.clone()),
                    workers: vec![w.name.clone()],
                    location: Some(var.provenance.to_string()),
                    message: format!(
                        "{name} (matched by a glob in `keys`) holds a NUL byte, which no process \
                         environment can carry: the worker could not start"
                    ),
                    hint: Some("remove the NUL byte from the value at its source".into()),
                });
            }
        }
        if w.start != crate::config::StartMode::Fork {
            out.extend(too_long_for_exec(w, built));
        }
        for key in &w.keys_exact {
            match built.vars.get(key) {
                None => out.push(ctx.missing(w, key)),
                Some(var) => {
                    let findings = ctx.value_findings(w, key, var, built);
                    let clean = findings.is_empty();
                    for f in findings {
                        out.push(f);
                    }
                    if clean && var.secret && is_plain_word(var.value.expose()) {
                        out.push(Finding {
                            severity: Severity::Warning,
                            code: "plain-word",
                            key: Some(key.clone()),
                            workers: vec![w.name.clone()],
                            location: Some(var.provenance.to_string()),
                            message: format!(
                                "{key} is secret but its value is a plain lower-case word: \
                                 it is redacted wherever that word appears in output, which \
                                 also gives the value away by context"
                            ),
                            hint: Some("use a real random secret".into()),
                        });
                    }
                }
            }
            if let Some((real, sdk)) = names::sdk_suggestion(key) {
                if !built.vars.contains_key(real) {
                    out.push(Finding {
                        severity: Severity::Warning,
                        code: "near-miss",
                        key: Some(key.clone()),
                        workers: vec![w.name.clone()],
                        location: built.vars.get(key).map(|v| v.provenance.to_string()),
                        message: format!("{key} is not a name any SDK reads: the {sdk} SDK reads {real}"),
                        hint: Some(format!(
                            "rename it to {real} in the worker's `keys` and in the source, unless the worker \
                             passes it explicitly (api_key=os.environ[\"{key}\"])"
                        )),
                    });
                }
            }
        }
        for f in ctx.azure_findings(w, built) {
            out.push(f);
        }
        out.extend(worker::google_both(w, built));
        out.extend(ctx.worker_dotenv(w, built));
        out.extend(worker::stop_fits(plan, w));
    }

    Report {
        config: plan.config_path.clone(),
        sources: snapshot.summaries.clone(),
        workers: selected
            .iter()
            .map(|w| WorkerSummary {
                name: w.name.clone(),
                keys: w.keys_exact.clone(),
                globs: w.key_globs.clone(),
            })
            .collect(),
        keys_checked: key_order.len(),
        findings: order(out.findings, &key_order),
    }
}

/// Findings, merged as they arrive: the same finding for two workers is one
/// finding naming both.
#[derive(Default)]
struct Collector {
    findings: Vec<Finding>,
}

impl Collector {
    fn push(&mut self, f: Finding) {
        match self.findings.iter_mut().find(|e| e.same_as(&f)) {
            Some(existing) => {
                for w in f.workers {
                    if !existing.workers.contains(&w) {
                        existing.workers.push(w);
                    }
                }
            }
            None => self.findings.push(f),
        }
    }

    fn extend(&mut self, fs: impl IntoIterator<Item = Finding>) {
        for f in fs {
            self.push(f);
        }
    }
}

/// Codes given to source problems (the others come from key checks).
const SOURCE_CODES: &[&str] = &["source", "duplicate", "bom"];

/// A stable code for a source problem. `SourceProblem` carries no code of its own,
/// so the two kinds worth telling apart are recognised by their wording, falling
/// back to `source`.
fn source_code(p: &SourceProblem) -> &'static str {
    if p.message.contains("byte-order mark") {
        "bom"
    } else if p.message.contains("is set again") {
        "duplicate"
    } else {
        "source"
    }
}

/// Variables no `execve` can pass: Linux refuses any one environment string
/// (`NAME=value`) longer than `MAX_ARG_STRLEN`, 32 pages (128 KiB with 4 KiB
/// pages), with E2BIG. Such a worker could never start, and would crash-loop on
/// "Argument list too long" naming no variable (issue 13: a 2 MB secret).
/// Fork-mode replicas are not exec'd, so this is for spawned workers.
fn too_long_for_exec(w: &WorkerPlan, built: &BuiltEnv) -> Vec<Finding> {
    let max = 32 * crate::procfs::page_size();
    built
        .vars
        .iter()
        .filter(|(name, var)| (name.len() + 1 + var.value.len() + 1) as u64 > max)
        .map(|(name, var)| Finding {
            severity: Severity::Error,
            code: "too-long",
            key: Some(name.clone()),
            workers: vec![w.name.clone()],
            location: Some(var.provenance.to_string()),
            message: format!(
                "{name} is {} bytes: Linux passes at most {max} bytes per environment \
                 variable (MAX_ARG_STRLEN), so worker {} could not start (`Argument list \
                 too long`)",
                var.value.len(),
                w.name
            ),
            hint: Some(
                "give the worker a path to the value instead (a file it reads, e.g. \
                 NAME_FILE), or shorten the value"
                    .into(),
            ),
        })
        .collect()
}

fn source_finding(p: &SourceProblem, selected: &[&WorkerPlan]) -> Finding {
    let workers = match &p.key {
        Some(k) => selected
            .iter()
            .filter(|w| w.keys_exact.contains(k))
            .map(|w| w.name.clone())
            .collect(),
        None => Vec::new(),
    };
    Finding {
        severity: p.severity,
        code: source_code(p),
        key: p.key.clone(),
        workers,
        location: Some(p.location.clone()),
        message: p.message.clone(),
        hint: None,
    }
}

/// Sorts findings into report order: source problems not tied to a checked key
/// first (by file), then each checked key in declaration order (its source
/// problems first), then findings about other variables, then per-worker ones.
/// Within a group the order of discovery is kept.
fn order(findings: Vec<Finding>, key_order: &[String]) -> Vec<Finding> {
    let class_label = |f: &Finding| -> (u8, String) {
        match &f.key {
            Some(k) if key_order.contains(k) => (1, k.clone()),
            Some(k) if SOURCE_CODES.contains(&f.code) => (0, k.clone()),
            Some(k) => (2, k.clone()),
            None if SOURCE_CODES.contains(&f.code) => {
                (0, location_file(f.location.as_deref().unwrap_or("")))
            }
            None => (3, f.location.clone().unwrap_or_default()),
        }
    };
    let mut seen: Vec<(u8, String)> = Vec::new();
    let mut ranked: Vec<((u8, usize), Finding)> = findings
        .into_iter()
        .map(|f| {
            let cl = class_label(&f);
            let idx = if cl.0 == 1 {
                key_order
                    .iter()
                    .position(|k| *k == cl.1)
                    .unwrap_or(usize::MAX)
            } else {
                match seen.iter().position(|s| *s == cl) {
                    Some(i) => i,
                    None => {
                        seen.push(cl.clone());
                        seen.len() - 1
                    }
                }
            };
            ((cl.0, idx), f)
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, f)| f).collect()
}

/// `.env:3` → `.env`; `path:3:7` → `path`; anything else unchanged.
pub(crate) fn location_file(location: &str) -> String {
    let mut s = location;
    for _ in 0..2 {
        match s.rsplit_once(':') {
            Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                s = head
            }
            _ => break,
        }
    }
    s.to_string()
}

/// The inputs every check shares.
struct Ctx<'a> {
    plan: &'a Plan,
    snapshot: &'a Snapshot,
    process_env: &'a ProcessEnv,
    has_env_source: bool,
}

impl Ctx<'_> {
    /// Where a source name is, for "did you mean X at .env:2?".
    fn where_is(&self, name: &str) -> String {
        if let Some(e) = self.snapshot.get(name) {
            return e.provenance.to_string();
        }
        if let Some(e) = self.snapshot.overridden.iter().find(|e| e.name == name) {
            return e.provenance.to_string();
        }
        "agentsup's own environment (not a source)".to_string()
    }

    fn missing(&self, w: &WorkerPlan, key: &str) -> Finding {
        let mut hints: Vec<String> = Vec::new();
        for p in &self.snapshot.problems {
            if p.key.as_deref() == Some(key) && p.severity == Severity::Error {
                hints.push(format!(
                    "{key} at {} could not be loaded (see the error above)",
                    p.location
                ));
            }
        }
        if !self.has_env_source && self.process_env.get(key).is_some() {
            hints.push(format!(
                "{key} is set in agentsup's own environment, but no [[source]] has type = \"env\", so \
                 workers never see it: add one"
            ));
        }
        let mut candidates: Vec<&str> = self.snapshot.all_names().into_iter().collect();
        if !self.has_env_source {
            candidates.extend(self.process_env.vars.keys().map(String::as_str));
        }
        let near = names::near_misses(key, candidates);
        if let Some((first, rest)) = near.split_first() {
            let at = self.where_is(first);
            // When the declared name is itself the mistake (`OPENAI_KEY`), renaming
            // the source's variable to it would be the wrong fix: point at the name
            // the SDK reads instead.
            let sdk_name = names::sdk_suggestion(key).map(|(real, _)| real);
            let is_sdk = |n: &str| names::SDK_NAMES.iter().any(|(s, _)| *s == n);
            match sdk_name {
                Some(real) if *first == real => hints.push(format!(
                    "the sources have {real} at {at}, the name the SDK reads: declare {real} in the \
                     worker's `keys` instead of {key}"
                )),
                Some(real) => hints.push(format!(
                    "the sources have {first} at {at}; the SDK reads {real}: rename it to {real} and \
                     declare {real} in the worker's `keys` instead of {key}"
                )),
                None if is_sdk(first) && !is_sdk(key) => hints.push(format!(
                    "the sources have {first} at {at}, the name the SDK reads: declare {first} in the \
                     worker's `keys` instead of {key}"
                )),
                None if *first == format!("{key}_FILE") => hints.push(format!(
                    "{first} at {at} is set, but it does not name a readable file holding {key}"
                )),
                None => hints.push(format!("did you mean {first} at {at}? rename it to {key}")),
            }
            if !rest.is_empty() {
                let others: Vec<String> = rest
                    .iter()
                    .map(|n| format!("{n} at {}", self.where_is(n)))
                    .collect();
                hints.push(format!("also similar: {}", others.join(", ")));
            }
        }
        if hints.is_empty() {
            let sources: Vec<&str> = self
                .snapshot
                .summaries
                .iter()
                .map(|s| s.description.as_str())
                .collect();
            hints.push(format!(
                "set {key} in one of the sources ({}), or remove it from the worker's `keys`",
                if sources.is_empty() {
                    "none configured".to_string()
                } else {
                    sources.join(", ")
                }
            ));
        }
        Finding {
            severity: Severity::Error,
            code: "missing",
            key: Some(key.to_string()),
            workers: vec![w.name.clone()],
            location: None,
            message: format!("{key} is not set by any source"),
            hint: Some(hints.join("; ")),
        }
    }

    /// The provider of `key` and whether `[keys]` named it explicitly.
    fn provider(&self, key: &str) -> Option<(Family, bool)> {
        match self.plan.key_rules.get(key).and_then(|r| r.provider) {
            Some(p) => Family::from_config(p).map(|f| (f, true)),
            None => names::infer_family(key).map(|f| (f, false)),
        }
    }

    fn value_findings(
        &self,
        w: &WorkerPlan,
        key: &str,
        var: &EnvVar,
        built: &BuiltEnv,
    ) -> Vec<Finding> {
        // Quoting and dotenv notes live on the snapshot entry; they apply only when
        // the worker gets that entry (not, say, an override from its `vars`).
        let entry = self
            .snapshot
            .get(key)
            .filter(|e| e.provenance == var.provenance);
        let provider = self.provider(key);
        let host = match provider {
            Some((Family::OpenAi, _)) => {
                provider::classify_base_url(expose(built, "OPENAI_BASE_URL"))
            }
            Some((Family::Anthropic, _)) => {
                provider::classify_base_url(expose(built, "ANTHROPIC_BASE_URL"))
            }
            _ => Host::Unset,
        };
        let rule = self.plan.key_rules.get(key);
        let credential = match rule.and_then(|r| r.secret) {
            Some(forced) => forced,
            None => crate::secret::name_looks_secret(key) || provider.is_some(),
        };
        let input = ValueInput {
            key,
            value: var.value.expose(),
            origin: Origin::of(&var.provenance, entry.and_then(|e| e.quote)),
            credential,
            provider,
            host,
            pattern: rule.and_then(|r| r.pattern.as_ref()),
            notes: entry.map_or(&[], |e| e.notes.as_slice()),
        };
        let overrides = entry.and_then(|_| self.overrides_note(key, &var.provenance));
        rules::value_hits(&input)
            .into_iter()
            .map(|h| Finding {
                severity: h.severity,
                code: h.code,
                key: Some(key.to_string()),
                workers: vec![w.name.clone()],
                location: Some(var.provenance.to_string()),
                message: h.message,
                hint: match (h.hint, &overrides) {
                    (Some(hint), Some(o)) => Some(format!("{hint}; {o}")),
                    (hint, _) => hint,
                },
            })
            .collect()
    }

    /// "this value overrides the one at .env:3": the fix may be in another source.
    fn overrides_note(&self, key: &str, from: &crate::secret::Provenance) -> Option<String> {
        let earlier: Vec<String> = self
            .snapshot
            .overridden
            .iter()
            .filter(|e| e.name == key)
            .map(|e| e.provenance.to_string())
            .collect();
        (!earlier.is_empty()).then(|| {
            format!(
                "the value from {from} overrides the one at {}",
                earlier.join(", ")
            )
        })
    }

    /// "X is set at .env:4 but not declared" or how to set it.
    fn provide_hint(&self, w: &WorkerPlan, name: &str, example: &str) -> String {
        match self.snapshot.get(name) {
            Some(e) => format!(
                "{name} is set at {}, but worker {} does not declare it: add it to the worker's `keys`",
                e.provenance, w.name
            ),
            None => format!(
                "set {name}={example} in a source and add it to the worker's `keys`, or put it in the worker's `vars`"
            ),
        }
    }
}

/// The value of `name` in a built environment, for decisions only (never shown).
fn expose<'a>(built: &'a BuiltEnv, name: &str) -> Option<&'a str> {
    built.vars.get(name).map(|v| v.value.expose())
}

/// `name` and its variable when it is set to something other than whitespace.
fn nonempty<'n, 'b>(built: &'b BuiltEnv, name: &'n str) -> Option<(&'n str, &'b EnvVar)> {
    built
        .vars
        .get(name)
        .filter(|v| !v.value.expose().trim().is_empty())
        .map(|v| (name, v))
}

#[cfg(test)]
mod tests;

/// True for a short all-lower-case word (`running`, `secret`): redacting it would
/// also redact agentsup's own vocabulary and reveal the value by context.
fn is_plain_word(v: &str) -> bool {
    (6..=12).contains(&v.len()) && v.chars().all(|c| c.is_ascii_lowercase())
}
