//! Formatting: worker lines and supervisor events as pretty text or JSON records.
//! The bytes of a JSON line record are [`super::json`]'s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::time::SystemTime;

use anstyle::{AnsiColor, Style};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use tracing::Level;

use super::json::{self, LineClock};
use super::{Format, LineMeta, OutputConfig, SUPERVISOR_LABEL};
use crate::redact::Redactor;

/// Colours for workers, in assignment order. Red is left out: it reads as an error.
const PALETTE: [AnsiColor; 10] = [
    AnsiColor::Cyan,
    AnsiColor::Yellow,
    AnsiColor::Green,
    AnsiColor::Magenta,
    AnsiColor::Blue,
    AnsiColor::BrightCyan,
    AnsiColor::BrightYellow,
    AnsiColor::BrightGreen,
    AnsiColor::BrightMagenta,
    AnsiColor::BrightBlue,
];

/// A value attached to a supervisor event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue {
    /// Text (redacted before printing).
    Str(String),
    /// Signed integer.
    I64(i64),
    /// Unsigned integer.
    U64(u64),
    /// Float.
    F64(f64),
    /// Boolean.
    Bool(bool),
}

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::I64(v)
    }
}
impl From<i32> for FieldValue {
    fn from(v: i32) -> Self {
        FieldValue::I64(v.into())
    }
}
impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::U64(v)
    }
}
impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        FieldValue::U64(v.into())
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::F64(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}

impl FieldValue {
    fn as_u64(&self) -> Option<u64> {
        match self {
            FieldValue::U64(v) => Some(*v),
            FieldValue::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// A message from agentsup itself, printed in the same stream and format as worker
/// lines. Usually built by [`OutputLayer`](super::OutputLayer) from a `tracing` event.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorEvent {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured fields, in order (`worker`, `replica`, `pid`, `status`, …).
    pub fields: Vec<(Cow<'static, str>, FieldValue)>,
}

impl SupervisorEvent {
    /// An event with no fields.
    pub(crate) fn new(level: Level, message: impl Into<String>) -> Self {
        SupervisorEvent {
            level,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub(crate) fn field(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<FieldValue>,
    ) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    fn get(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// JSON keys of every record; an event field with one of these names is written as
/// `field_<name>` so it cannot overwrite them.
const RESERVED_KEYS: [&str; 6] = ["ts", "worker", "level", "message", "stream", "line"];

/// Turns lines and events into bytes. Public for benchmarks and for callers that
/// format without a sink.
#[derive(Debug, Clone)]
pub struct LineFormatter {
    pub(super) format: Format,
    color: bool,
    label_width: usize,
    colors: HashMap<String, AnsiColor>,
    width: Option<usize>,
}

impl LineFormatter {
    /// A formatter for `config`.
    pub fn new(config: &OutputConfig) -> Self {
        let colors = config
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), PALETTE[i % PALETTE.len()]))
            .collect();
        LineFormatter {
            format: config.format,
            color: config.color,
            label_width: config.label_width.max(SUPERVISOR_LABEL.len()),
            colors,
            width: config.width,
        }
    }

    /// The format in use.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// The width pretty events wrap to; `None` (not a terminal) keeps them whole.
    pub(crate) fn width(&self) -> Option<usize> {
        self.width
    }

    fn worker_color(&self, worker: &str) -> AnsiColor {
        self.colors.get(worker).copied().unwrap_or_else(|| {
            // FNV-1a: stable across runs, unlike std's RandomState.
            let hash = worker.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            PALETTE[(hash % PALETTE.len() as u64) as usize]
        })
    }

    fn write_label(&self, out: &mut Vec<u8>, label: &str, style: Style) {
        let pad = self.label_width.saturating_sub(label.chars().count());
        if self.color {
            let _ = write!(out, "{}{label}{}", style.render(), style.render_reset());
        } else {
            out.extend_from_slice(label.as_bytes());
        }
        out.resize(out.len() + pad, b' ');
        out.extend_from_slice(b" | ");
    }

    /// The constant part of every record of a stream's lines, computed once per pipe:
    /// the pretty prefix (`planner.0 | `, padded and coloured), or in JSON mode
    /// everything between the `ts` value and the `line` value
    /// (`","worker":"planner","replica":0,"pid":…,"stream":"stdout","line":"`).
    pub fn prefix(&self, meta: &LineMeta) -> Vec<u8> {
        let mut out = Vec::new();
        match self.format {
            Format::Pretty => {
                let label = format!("{}.{}", meta.worker, meta.replica);
                let style = Style::new().fg_color(Some(self.worker_color(&meta.worker).into()));
                self.write_label(&mut out, &label, style);
            }
            Format::Json => json::push_json_fields(&mut out, meta),
        }
        out
    }

    /// Appends one record for an already redacted `line` (no newline in it).
    /// `prefix` comes from [`LineFormatter::prefix`] for the same `meta` (an empty
    /// one is recomputed). `partial` marks a piece of an over-long line that
    /// continues in the next record (JSON `"partial": true`).
    pub fn write_line(
        &self,
        out: &mut Vec<u8>,
        prefix: &[u8],
        meta: &LineMeta,
        line: &[u8],
        partial: bool,
    ) {
        self.write_line_at(out, prefix, meta, line, partial, &mut LineClock::new());
    }

    /// [`LineFormatter::write_line`] with the JSON `ts` taken from `clock`, which a
    /// pump keeps per pipe so that a read of many lines costs one clock read.
    pub(super) fn write_line_at(
        &self,
        out: &mut Vec<u8>,
        prefix: &[u8],
        meta: &LineMeta,
        line: &[u8],
        partial: bool,
        clock: &mut LineClock,
    ) {
        match self.format {
            Format::Pretty => {
                out.extend_from_slice(prefix);
                push_lossy(out, line);
                out.push(b'\n');
            }
            Format::Json => json::push_line_record(out, clock, prefix, meta, line, partial),
        }
    }

    /// Appends one supervisor event, redacting its message and text fields first.
    pub(crate) fn write_event(
        &self,
        out: &mut Vec<u8>,
        event: &SupervisorEvent,
        redactor: &Redactor,
    ) {
        match self.format {
            Format::Pretty => self.write_event_pretty(out, event, redactor),
            Format::Json => write_json(out, &EventRecord { event, redactor }),
        }
    }

    fn write_event_pretty(&self, out: &mut Vec<u8>, event: &SupervisorEvent, redactor: &Redactor) {
        use std::fmt::Write as _;
        let mut body = String::new();
        let (level_word, level_color) = match event.level {
            Level::ERROR => ("error: ", Some(AnsiColor::Red)),
            Level::WARN => ("warning: ", Some(AnsiColor::Yellow)),
            Level::DEBUG => ("debug: ", None),
            Level::TRACE => ("trace: ", None),
            _ => ("", None),
        };
        match (self.color, level_color) {
            (true, Some(c)) => {
                let style = Style::new().fg_color(Some(c.into())).bold();
                let _ = write!(
                    body,
                    "{}{level_word}{}",
                    style.render(),
                    style.render_reset()
                );
            }
            _ => body.push_str(level_word),
        }
        // `planner.0: message` reads better than `message worker=planner replica=0`.
        let subject = match event.get("worker") {
            Some(FieldValue::Str(worker)) => {
                let replica = event.get("replica").and_then(FieldValue::as_u64);
                let _ = match replica {
                    Some(r) => write!(body, "{}.{r}: ", shown(redactor, worker)),
                    None => write!(body, "{}: ", shown(redactor, worker)),
                };
                Some(replica.is_some())
            }
            _ => None,
        };
        body.push_str(&shown(redactor, &event.message));
        for (name, value) in &event.fields {
            if (subject.is_some() && name == "worker")
                || (subject == Some(true) && name == "replica")
            {
                continue;
            }
            let _ = write!(body, " {name}=");
            match value {
                FieldValue::Str(s) => {
                    let s = shown(redactor, s);
                    if s.is_empty()
                        || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=')
                    {
                        let _ = write!(body, "{s:?}");
                    } else {
                        body.push_str(&s);
                    }
                }
                FieldValue::I64(v) => {
                    let _ = write!(body, "{v}");
                }
                FieldValue::U64(v) => {
                    let _ = write!(body, "{v}");
                }
                FieldValue::F64(v) => {
                    let _ = write!(body, "{v}");
                }
                FieldValue::Bool(v) => {
                    let _ = write!(body, "{v}");
                }
            }
        }
        // A multi-line message (an error chain, an event's detail) keeps the prefix
        // on every line, so no line of output is unlabelled. With a width, each
        // line wraps: a headline's continuation indented by 4, an indented detail
        // line's by its own indent, so the detail reads as one block.
        let mut prefix = Vec::new();
        self.write_label(&mut prefix, SUPERVISOR_LABEL, Style::new().bold());
        let first = self.label_width + " | ".len();
        for line in body.split('\n') {
            let lead = line.len() - line.trim_start_matches(' ').len();
            let indent = if lead == 0 { 4 } else { lead };
            for piece in super::width::wrap(line, self.width, first, indent) {
                out.extend_from_slice(&prefix);
                out.extend_from_slice(piece.trim_end().as_bytes());
                out.push(b'\n');
            }
        }
    }
}

/// Agentsup's own text (which may quote a worker: a traceback, a command's
/// stderr) as a terminal shows it, redacted (see [`crate::redact::terminal`]).
fn shown<'a>(redactor: &Redactor, text: &'a str) -> Cow<'a, str> {
    match crate::redact::terminal::render_str(text) {
        Cow::Borrowed(t) => redactor.redact_str(t),
        Cow::Owned(t) => Cow::Owned(redactor.redact_str(&t).into_owned()),
    }
}

/// Appends `bytes` as UTF-8, each invalid sequence as U+FFFD, without allocating.
fn push_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_ascii() {
        out.extend_from_slice(bytes);
        return;
    }
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

/// Serialises one record and a newline; on the (unreachable) error, leaves `out`
/// as it was rather than with half a record.
fn write_json<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    match serde_json::to_writer(&mut *out, value) {
        Ok(()) => out.push(b'\n'),
        Err(_) => out.truncate(start),
    }
}

/// RFC 3339 UTC with milliseconds, written straight into the JSON string. Visible
/// to [`super::json`]'s tests, whose serde reference for the line record uses it.
pub(super) struct Timestamp(pub(super) SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

struct EventRecord<'a> {
    event: &'a SupervisorEvent,
    redactor: &'a Redactor,
}

impl Serialize for EventRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("ts", &Timestamp(SystemTime::now()))?;
        map.serialize_entry("worker", SUPERVISOR_LABEL)?;
        map.serialize_entry("level", &event.level.as_str().to_ascii_lowercase())?;
        map.serialize_entry("message", &shown(self.redactor, &event.message))?;
        for (name, value) in &event.fields {
            let key: Cow<'_, str> = if RESERVED_KEYS.contains(&name.as_ref()) {
                Cow::Owned(format!("field_{name}"))
            } else {
                Cow::Borrowed(name)
            };
            match value {
                FieldValue::Str(v) => map.serialize_entry(&key, &shown(self.redactor, v))?,
                FieldValue::I64(v) => map.serialize_entry(&key, v)?,
                FieldValue::U64(v) => map.serialize_entry(&key, v)?,
                FieldValue::F64(v) => map.serialize_entry(&key, v)?,
                FieldValue::Bool(v) => map.serialize_entry(&key, v)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Stream;
    use crate::output::test_support::{config, meta};
    use crate::secret::Sensitive;

    #[test]
    fn pretty_prefix_is_padded() {
        let fmt = LineFormatter::new(&config(Format::Pretty, 10, &[]));
        let mut out = Vec::new();
        let m = meta("w", 3, Stream::Stdout);
        fmt.write_line(&mut out, &fmt.prefix(&m), &m, b"hi \xff", false);
        let m = meta("planner", 10, Stream::Stderr);
        fmt.write_line(&mut out, &fmt.prefix(&m), &m, b"there", false);
        fmt.write_event(
            &mut out,
            &SupervisorEvent::new(Level::INFO, "up"),
            &Redactor::default(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "w.3        | hi \u{FFFD}\nplanner.10 | there\nagentsup   | up\n"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let mut cfg = config(Format::Pretty, 8, &[]);
        cfg.color = true;
        let fmt = LineFormatter::new(&cfg);
        let a = fmt.prefix(&meta("planner", 0, Stream::Stdout));
        let b = fmt.prefix(&meta("w", 0, Stream::Stdout));
        assert!(a.starts_with(b"\x1b["));
        assert_ne!(a[..5], b[..5], "neighbouring workers get different colours");
        assert_eq!(
            LineFormatter::new(&config(Format::Pretty, 8, &[])).prefix(&meta(
                "w",
                0,
                Stream::Stdout
            )),
            b"w.0      | "
        );
    }

    #[test]
    fn json_event_shape_and_redaction() {
        let fmt = LineFormatter::new(&config(Format::Json, 0, &[]));
        let r = Redactor::new([("K".to_owned(), Sensitive::new("sk-event-secret"))]);
        let ev = SupervisorEvent::new(Level::WARN, "rejected sk-event-secret")
            .field("worker", "planner")
            .field("replica", 2u32)
            .field("pid", 7u32)
            .field("detail", "key \"sk-event-secret\"")
            .field("changed", true);
        let mut out = Vec::new();
        fmt.write_event(&mut out, &ev, &r);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["worker"], "agentsup");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "rejected [redacted:K]");
        assert_eq!(v["field_worker"], "planner");
        assert_eq!(v["replica"], 2);
        assert_eq!(v["pid"], 7);
        assert_eq!(v["detail"], "key \"[redacted:K]\"");
        assert_eq!(v["changed"], true);
        assert!(v["ts"].is_string());
    }

    #[test]
    fn pretty_event_subject_and_fields() {
        let fmt = LineFormatter::new(&config(Format::Pretty, 10, &[]));
        let r = Redactor::new([("K".to_owned(), Sensitive::new("sk-event-secret"))]);
        let ev = SupervisorEvent::new(Level::ERROR, "exited\nsecond line sk-event-secret")
            .field("worker", "planner")
            .field("replica", 0u32)
            .field("status", 1i64)
            .field("reason", "auth failure");
        let mut out = Vec::new();
        fmt.write_event(&mut out, &ev, &r);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "agentsup   | error: planner.0: exited\n\
             agentsup   | second line [redacted:K] status=1 reason=\"auth failure\"\n"
        );
    }

    #[test]
    fn pretty_events_wrap_to_the_width_with_labels_on_every_line() {
        let mut cfg = config(Format::Pretty, 12, &[("K", "sk-wrapped-secret-value")]);
        cfg.width = Some(80);
        let fmt = LineFormatter::new(&cfg);
        let ev = SupervisorEvent::new(
            Level::WARN,
            "running -> backoff, status 1, class auth: re-reading sources before restarting\n  \
             pid 7: matched `Incorrect API key provided` (OpenAI-compatible API) on the last \
             line: the key sk-wrapped-secret-value was rejected; the key it echoed is the injected one",
        )
        .field("worker", "summarizer")
        .field("replica", 0u32);
        let mut out = Vec::new();
        fmt.write_event(
            &mut out,
            &ev,
            &Redactor::new([("K".to_owned(), Sensitive::new("sk-wrapped-secret-value"))]),
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 4, "{text}");
        for l in &lines {
            assert!(l.chars().count() <= 80, "{l:?}");
            assert!(l.starts_with("agentsup     | "), "{l:?}");
        }
        assert!(lines[0].starts_with("agentsup     | warning: summarizer.0: running -> backoff"));
        assert!(
            lines[1].starts_with("agentsup     |     "),
            "headline continues at 4: {text}"
        );
        let detail = lines.iter().position(|l| l.contains("pid 7:")).unwrap();
        assert!(
            lines[detail].starts_with("agentsup     |   pid 7:"),
            "{text}"
        );
        assert!(
            lines[detail + 1].starts_with("agentsup     |   ")
                && !lines[detail + 1].starts_with("agentsup     |    ")
        );
        assert!(
            text.contains("[redacted:K]") && !text.contains("sk-wrapped"),
            "{text}"
        );
    }
}
