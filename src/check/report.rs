//! Rendering a [`Report`]: aligned text for people (coloured only when asked,
//! i.e. on a TTY without `NO_COLOR`), and JSON for machines.
//!
//! Both renderings print only what the findings hold, and findings never hold a
//! value, so nothing here needs to know what is secret.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde_json::json;

use super::{Report, location_file};
use crate::diag::Finding;
use crate::diag::Severity;
use crate::sources::SourceStatus;

/// Widest key or worker list that still sets the column width; longer ones just
/// push the rest of their own line to the right.
const MAX_COLUMN: usize = 32;

/// Indentation of a finding's message and hint lines (under the key column).
const INDENT: &str = "         ";

struct Painter {
    color: bool,
}

impl Painter {
    fn paint(&self, text: &str, style: Style) -> String {
        if self.color && !text.is_empty() {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    fn severity(&self, s: Severity, padded: &str) -> String {
        let color = match s {
            Severity::Error => AnsiColor::Red,
            Severity::Warning => AnsiColor::Yellow,
        };
        self.paint(padded, Style::new().fg_color(Some(color.into())).bold())
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn workers_label(f: &Finding) -> String {
    // A finding about one worker (preflight's `worker "planner"`) names it already.
    if f.key.is_none()
        && let [only] = f.workers.as_slice()
        && f.location.as_deref() == Some(format!("worker {only:?}").as_str())
    {
        return String::new();
    }
    match f.workers.len() {
        0 => String::new(),
        1 => format!("(worker {})", f.workers[0]),
        _ => format!("(workers {})", f.workers.join(", ")),
    }
}

/// The first column of a finding and the location shown after it: the key, or
/// for findings without a key, their location.
fn subject(f: &Finding) -> (String, Option<&str>) {
    match &f.key {
        Some(k) => (k.clone(), f.location.as_deref()),
        None => (f.location.clone().unwrap_or_else(|| "-".into()), None),
    }
}

/// Findings that belong together (same key, or same file for keyless ones) are
/// printed as one block.
fn group(f: &Finding) -> String {
    match &f.key {
        Some(k) => k.clone(),
        None => location_file(f.location.as_deref().unwrap_or("")),
    }
}

impl Report {
    /// The report for people: config, sources, workers, findings grouped by key,
    /// and a summary line; `color` adds ANSI styles (pass it only for a TTY).
    pub(crate) fn render_text(&self, color: bool) -> String {
        self.render_text_width(color, None)
    }

    /// [`Report::render_text`] wrapped to `width` columns (a terminal's, see
    /// [`crate::output::width::stdout_width`]): a finding's message and hint wrap
    /// under their own indent; the columns before them never do.
    pub(crate) fn render_text_width(&self, color: bool, width: Option<usize>) -> String {
        let p = Painter { color };
        let push_wrapped = |out: &mut String, line: &str, indent: usize| {
            for piece in crate::output::width::wrap(line, width, 0, indent) {
                let _ = writeln!(out, "{}", piece.trim_end());
            }
        };
        let bold = Style::new().bold();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {}",
            p.paint("agentsup check:", bold),
            self.config.display()
        );

        let _ = writeln!(out, "\nsources (a later source overrides an earlier one):");
        if self.sources.is_empty() {
            let _ = writeln!(out, "  none");
        }
        let dw = self
            .sources
            .iter()
            .map(|s| s.description.chars().count())
            .max()
            .unwrap_or(0);
        for s in &self.sources {
            let status = match s.status {
                SourceStatus::Loaded(n) => plural(n, "value", "values"),
                SourceStatus::Missing => {
                    p.paint("missing (optional, skipped)", Style::new().dimmed())
                }
                SourceStatus::Failed => {
                    p.paint("failed", Style::new().fg_color(Some(AnsiColor::Red.into())))
                }
            };
            let _ = writeln!(out, "  {}. {:<dw$}  {status}", s.index + 1, s.description);
        }

        let _ = writeln!(out, "\nworkers:");
        if self.workers.is_empty() {
            let _ = writeln!(out, "  none");
        }
        let nw = self
            .workers
            .iter()
            .map(|w| w.name.chars().count())
            .max()
            .unwrap_or(0);
        for w in &self.workers {
            let mut line = format!("  {:<nw$}  {}", w.name, plural(w.keys.len(), "key", "keys"));
            if !w.keys.is_empty() {
                let _ = write!(line, ": {}", w.keys.join(", "));
            }
            if !w.globs.is_empty() {
                let _ = write!(line, " (optional: {})", w.globs.join(", "));
            }
            push_wrapped(&mut out, &line, nw + 4);
        }

        let sw = self
            .findings
            .iter()
            .map(|f| subject(f).0.chars().count())
            .filter(|n| *n <= MAX_COLUMN)
            .max()
            .unwrap_or(0);
        let ww = self
            .findings
            .iter()
            .map(|f| workers_label(f).chars().count())
            .filter(|n| *n <= MAX_COLUMN)
            .max()
            .unwrap_or(0);
        let mut last_group: Option<String> = None;
        for f in &self.findings {
            let g = group(f);
            if last_group.as_ref() != Some(&g) {
                out.push('\n');
                last_group = Some(g);
            }
            let (subj, loc) = subject(f);
            let sev = p.severity(f.severity, &format!("{:<7}", f.severity.to_string()));
            let subj_pad = " ".repeat(sw.saturating_sub(subj.chars().count()));
            let wl = workers_label(f);
            let wl_pad = " ".repeat(ww.saturating_sub(wl.chars().count()));
            let mut head = format!("{sev}  {}{subj_pad}", p.paint(&subj, bold));
            if ww > 0 {
                let _ = write!(head, "  {wl}{wl_pad}");
            }
            if let Some(loc) = loc {
                let _ = write!(head, "  {loc}");
            }
            let _ = writeln!(out, "{}", head.trim_end());
            for line in f.message.lines() {
                push_wrapped(&mut out, &format!("{INDENT}{line}"), INDENT.len());
            }
            if let Some(hint) = &f.hint {
                let label = p.paint("hint:", Style::new().fg_color(Some(AnsiColor::Cyan.into())));
                let hinted = format!("{INDENT}{label} {hint}");
                push_wrapped(&mut out, &hinted, INDENT.len() + "hint: ".len());
            }
        }

        let errors = self.errors();
        let warnings = self.warnings();
        let _ = writeln!(
            out,
            "\n{}, {}; {} checked for {}",
            plural(errors, "error", "errors"),
            plural(warnings, "warning", "warnings"),
            plural(self.keys_checked, "key", "keys"),
            plural(self.workers.len(), "worker", "workers"),
        );
        if errors == 0 {
            let ok = p.paint(
                "ok",
                Style::new().fg_color(Some(AnsiColor::Green.into())).bold(),
            );
            let tail = if warnings == 0 {
                "every required key is present and well-formed"
            } else {
                "nothing blocks `agentsup run`; the warnings above are worth a look"
            };
            let _ = writeln!(out, "{ok}: {tail}");
        } else {
            let _ = writeln!(out, "nothing can start until the errors above are fixed");
        }
        out
    }

    /// The report for machines, pretty-printed: see [`Report::to_json`].
    pub(crate) fn render_json(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(&self.to_json()).unwrap_or_else(|_| "{}".to_string());
        text.push('\n');
        text
    }

    /// The report as a JSON document: `{"config", "sources", "workers",
    /// "keys_checked", "findings": [{severity, code, key, workers, location,
    /// message, hint}], "errors", "warnings", "ok"}`. `run --log-format json`
    /// embeds it in its `check` event.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let sources: Vec<_> = self
            .sources
            .iter()
            .map(|s| {
                let (status, count) = match s.status {
                    SourceStatus::Loaded(n) => ("loaded", Some(n)),
                    SourceStatus::Missing => ("missing", None),
                    SourceStatus::Failed => ("failed", None),
                };
                json!({"index": s.index, "description": s.description, "status": status, "count": count})
            })
            .collect();
        let workers: Vec<_> = self
            .workers
            .iter()
            .map(|w| json!({"name": w.name, "keys": w.keys, "globs": w.globs}))
            .collect();
        let findings: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "severity": f.severity.to_string(),
                    "code": f.code,
                    "key": f.key,
                    "workers": f.workers,
                    "location": f.location,
                    "message": f.message,
                    "hint": f.hint,
                })
            })
            .collect();
        json!({
            "config": self.config.display().to_string(),
            "sources": sources,
            "workers": workers,
            "keys_checked": self.keys_checked,
            "findings": findings,
            "errors": self.errors(),
            "warnings": self.warnings(),
            "ok": !self.has_errors(),
        })
    }
}
