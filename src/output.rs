//! One writer owns stdout (SPEC 7): line framing, pretty/JSON records, colour, and
//! back-pressure from a slow reader to the workers.
//!
//! # Data flow
//!
//! Each stdout/stderr pipe of each replica gets a [`pump`] task. It reads large
//! chunks, frames them into lines ([`LineFramer`]), keeps the raw lines in the
//! replica's [`Tail`] for exit classification, redacts every line, formats it (the
//! `planner.0 | ` prefix or a JSON object) into a batch buffer, and hands the batch
//! to the [`OutputSink`]. Formatting happens in the pumps, in parallel; the single
//! writer thread only copies batches into a large buffered writer.
//!
//! # Back-pressure, never dropping
//!
//! The sink's queue is bounded in bytes ([`QUEUE_BYTES`]). A pump that finds it full
//! waits, so it stops reading its pipe, the pipe fills, and the worker blocks in
//! `write`: a slow reader of agentsup's stdout slows the workers and no line is lost.
//! agentsup's own events (through [`OutputLayer`]) wait the same way.
//!
//! The writer flushes whenever the queue is momentarily empty, so output is prompt
//! when it trickles and written in large blocks when it floods.
//!
//! # Broken stdout
//!
//! When a write to stdout fails (`EPIPE` because the reader went away, as in
//! `agentsup run | head`), the writer stops writing but keeps draining the queue and
//! discarding. Blocking the workers on a reader that is gone would stall them and the
//! shutdown forever, and there is nobody left to lose the lines to. `EPIPE` is quiet;
//! other errors get one note on stderr. [`OutputSink::is_broken`] lets the
//! supervisor decide what else to do.
//!
//! Ordering is preserved per stream (one pump per pipe, one FIFO queue), and a line is
//! never interleaved with another because each formatted line goes into one batch.
//!
//! Not here: deciding which values are secret ([`crate::redact`]) and classifying
//! exits from the tail ([`crate::auth`]).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use anstyle::{AnsiColor, Style};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Notify, watch};
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::redact::{Redactor, SharedRedactor, StreamRedactor};

/// Longest piece of a line emitted at once. Longer lines are printed as several
/// pieces, so memory per pipe stays bounded whatever a worker writes.
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes the sink may hold before producers wait. The writer takes the whole queue
/// at once, so at most twice this is buffered.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Size of each pump's read buffer.
const READ_BUF: usize = 64 * 1024;

/// A pump sends its batch once it is this big, even mid-read (JSON can grow a read).
const BATCH_BYTES: usize = 128 * 1024;

/// Buffers kept for reuse, and the largest one worth keeping.
const POOL_MAX: usize = 64;
const POOL_BUF_MAX: usize = 1024 * 1024;

/// The label of agentsup's own events.
pub const SUPERVISOR_LABEL: &str = "agentsup";

/// Lines and bytes [`Tail`] keeps by default (SPEC 5).
pub const TAIL_LINES: usize = 200;
/// See [`TAIL_LINES`].
pub const TAIL_BYTES: usize = 64 * 1024;

/// Which pipe of a replica a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The worker's stdout.
    Stdout,
    /// The worker's stderr.
    Stderr,
}

impl Stream {
    /// `"stdout"` or `"stderr"`, as in the JSON records.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Who wrote a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMeta {
    /// Worker name.
    pub worker: Arc<str>,
    /// 0-based replica index.
    pub replica: u32,
    /// Process id of this run of the replica.
    pub pid: u32,
    /// Which pipe.
    pub stream: Stream,
}

/// How records are printed (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `planner.0 | text`, padded and coloured.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Whether pretty output is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and the environment allows it (`NO_COLOR`,
    /// `CLICOLOR`, `CLICOLOR_FORCE`, `TERM=dumb`, following anstream).
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour (`--no-color`).
    Never,
}

impl ColorChoice {
    /// `Never` when `--no-color` was given, else `Auto`.
    pub fn from_flag(no_color: bool) -> Self {
        if no_color {
            ColorChoice::Never
        } else {
            ColorChoice::Auto
        }
    }

    /// Resolves the choice for agentsup's stdout.
    pub fn for_stdout(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                anstream::AutoStream::choice(&io::stdout()) != anstream::ColorChoice::Never
            }
        }
    }
}

/// Width of the widest label (`name.N` for the highest replica, or `agentsup`), for
/// [`OutputConfig::label_width`]. Takes `(worker name, replica count)`.
pub fn label_width<'a>(workers: impl IntoIterator<Item = (&'a str, u32)>) -> usize {
    workers
        .into_iter()
        .map(|(name, replicas)| {
            let last = replicas.saturating_sub(1);
            name.chars().count() + 1 + last.to_string().len()
        })
        .fold(SUPERVISOR_LABEL.len(), usize::max)
}

/// How the sink formats records.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// Pretty or JSON.
    pub format: Format,
    /// Colour pretty output (resolve with [`ColorChoice::for_stdout`]).
    pub color: bool,
    /// Labels are padded to this width (see [`label_width`]).
    pub label_width: usize,
    /// Worker names in config order; colours are assigned in this order so that
    /// neighbours differ. Unknown names get a colour from a hash of the name.
    pub workers: Vec<String>,
    /// Redacts supervisor events and [`OutputSink::line`]. Defaults to
    /// [`crate::redact::global`].
    pub redactor: SharedRedactor,
}

impl OutputConfig {
    /// No colour, labels padded to `agentsup`, the global redactor.
    pub fn new(format: Format) -> Self {
        OutputConfig {
            format,
            color: false,
            label_width: SUPERVISOR_LABEL.len(),
            workers: Vec::new(),
            redactor: crate::redact::global().clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Line framing
// ---------------------------------------------------------------------------

/// One framed piece of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n` (any `\r` is kept), or the last piece of an
    /// over-long line.
    Line(&'a [u8]),
    /// [`MAX_LINE`] bytes of a longer line; more of the same line follows.
    Piece(&'a [u8]),
}

/// Splits a byte stream on `\n`, in bounded memory.
///
/// Complete lines inside one read are returned as slices of that read, with no copy;
/// only a line split across reads is assembled in the framer's buffer.
#[derive(Debug)]
pub struct LineFramer {
    pending: Vec<u8>,
    /// `pending` was handed out as a frame and must be cleared on the next call.
    handed_out: bool,
    max: usize,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineFramer {
    /// A framer cutting lines at [`MAX_LINE`].
    pub fn new() -> Self {
        Self::with_max(MAX_LINE)
    }

    /// A framer cutting lines at `max` bytes (at least 1).
    pub fn with_max(max: usize) -> Self {
        LineFramer {
            pending: Vec::new(),
            handed_out: false,
            max: max.max(1),
        }
    }

    /// Returns the next frame from `data[*pos..]`, advancing `pos`, or `None` when
    /// the rest of `data` is an incomplete line (kept for the next read).
    pub fn next_frame<'a>(&'a mut self, data: &'a [u8], pos: &mut usize) -> Option<Frame<'a>> {
        if self.handed_out {
            self.pending.clear();
            self.handed_out = false;
        }
        let rest = &data[(*pos).min(data.len())..];
        if rest.is_empty() {
            return None;
        }
        let have = self.pending.len();
        // A newline within the first `max + 1` bytes of the line ends a frame of at
        // most `max` bytes. Past that, the line is known to be longer than `max`.
        let window = (self.max + 1 - have).min(rest.len());
        match find_newline(&rest[..window]) {
            Some(i) => {
                *pos += i + 1;
                if have == 0 {
                    return Some(Frame::Line(&rest[..i]));
                }
                self.pending.extend_from_slice(&rest[..i]);
                self.handed_out = true;
                Some(Frame::Line(&self.pending))
            }
            None if have + rest.len() > self.max => {
                let take = self.max - have;
                *pos += take;
                if have == 0 {
                    return Some(Frame::Piece(&rest[..take]));
                }
                self.pending.extend_from_slice(&rest[..take]);
                self.handed_out = true;
                Some(Frame::Piece(&self.pending))
            }
            None => {
                self.pending.extend_from_slice(rest);
                *pos = data.len();
                None
            }
        }
    }

    /// At end of input: the last line if it had no newline.
    pub fn finish(&mut self) -> Option<&[u8]> {
        if self.handed_out {
            self.pending.clear();
            self.handed_out = false;
        }
        if self.pending.is_empty() {
            return None;
        }
        self.handed_out = true;
        Some(&self.pending)
    }
}

/// Position of the first `\n`. A word-at-a-time scan: `memchr` is not a direct
/// dependency, and a byte loop is several times slower on long lines.
fn find_newline(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = s.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ NL;
        // Classic "has zero byte": the lowest set bit marks the first zero byte
        // exactly (false positives only occur above a real one).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

/// Bytes at the end of `s` that start a UTF-8 sequence cut short, so a piece of a
/// long line can end on a char boundary instead of printing two U+FFFD.
fn incomplete_utf8_tail(s: &[u8]) -> usize {
    for back in 1..=s.len().min(3) {
        let b = s[s.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

// ---------------------------------------------------------------------------
// Tail
// ---------------------------------------------------------------------------

/// The last lines of a replica's output, unredacted, for exit classification
/// (SPEC 5). Never printed.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<Vec<u8>>,
    /// Sum of line lengths plus one separator each.
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Default for Tail {
    fn default() -> Self {
        Self::new()
    }
}

impl Tail {
    /// A tail of [`TAIL_LINES`] lines and at most [`TAIL_BYTES`] bytes.
    pub fn new() -> Self {
        Self::with_limits(TAIL_LINES, TAIL_BYTES)
    }

    /// A tail with other limits (both at least 1).
    pub fn with_limits(max_lines: usize, max_bytes: usize) -> Self {
        Tail {
            lines: VecDeque::new(),
            bytes: 0,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Adds a line (without newline). A line longer than the byte limit keeps its
    /// end. Evicted buffers are reused, so a full tail allocates nothing.
    pub fn push(&mut self, line: &[u8]) {
        let limit = self.max_bytes - 1;
        let line = &line[line.len().saturating_sub(limit)..];
        let mut reuse = None;
        while !self.lines.is_empty()
            && (self.lines.len() >= self.max_lines || self.bytes + line.len() + 1 > self.max_bytes)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
                reuse = Some(old);
            }
        }
        let mut buf = reuse.unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(line);
        self.bytes += buf.len() + 1;
        self.lines.push_back(buf);
    }

    /// The lines joined with `\n`, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes);
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&String::from_utf8_lossy(line));
        }
        out
    }

    /// Forgets everything (a new run of the replica).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

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
pub enum FieldValue {
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
/// lines. Usually built by [`OutputLayer`] from a `tracing` event.
#[derive(Debug, Clone)]
pub struct SupervisorEvent {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured fields, in order (`worker`, `replica`, `pid`, `status`, …).
    pub fields: Vec<(Cow<'static, str>, FieldValue)>,
}

impl SupervisorEvent {
    /// An event with no fields.
    pub fn new(level: Level, message: impl Into<String>) -> Self {
        SupervisorEvent {
            level,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn field(
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
    format: Format,
    color: bool,
    label_width: usize,
    colors: HashMap<String, AnsiColor>,
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
        }
    }

    /// The format in use.
    pub fn format(&self) -> Format {
        self.format
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

    /// The pretty prefix (`planner.0 | `, padded and coloured) for a stream's lines,
    /// computed once per pipe. Empty in JSON mode.
    pub fn prefix(&self, meta: &LineMeta) -> Vec<u8> {
        let mut out = Vec::new();
        if self.format == Format::Pretty {
            let label = format!("{}.{}", meta.worker, meta.replica);
            let style = Style::new().fg_color(Some(self.worker_color(&meta.worker).into()));
            self.write_label(&mut out, &label, style);
        }
        out
    }

    /// Appends one record for an already redacted `line` (no newline in it).
    /// `prefix` comes from [`LineFormatter::prefix`] for the same `meta`.
    /// `partial` marks a piece of an over-long line that continues in the next
    /// record (JSON `"partial": true`).
    pub fn write_line(
        &self,
        out: &mut Vec<u8>,
        prefix: &[u8],
        meta: &LineMeta,
        line: &[u8],
        partial: bool,
    ) {
        match self.format {
            Format::Pretty => {
                out.extend_from_slice(prefix);
                push_lossy(out, line);
                out.push(b'\n');
            }
            Format::Json => {
                let record = LineRecord {
                    ts: Timestamp(SystemTime::now()),
                    worker: &meta.worker,
                    replica: meta.replica,
                    pid: meta.pid,
                    stream: meta.stream.as_str(),
                    line: Lossy(line),
                    partial,
                };
                write_json(out, &record);
            }
        }
    }

    /// Appends one supervisor event, redacting its message and text fields first.
    pub fn write_event(&self, out: &mut Vec<u8>, event: &SupervisorEvent, redactor: &Redactor) {
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
                    Some(r) => write!(body, "{}.{r}: ", redactor.redact_str(worker)),
                    None => write!(body, "{}: ", redactor.redact_str(worker)),
                };
                Some(replica.is_some())
            }
            _ => None,
        };
        body.push_str(&redactor.redact_str(&event.message));
        for (name, value) in &event.fields {
            if (subject.is_some() && name == "worker")
                || (subject == Some(true) && name == "replica")
            {
                continue;
            }
            let _ = write!(body, " {name}=");
            match value {
                FieldValue::Str(s) => {
                    let s = redactor.redact_str(s);
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
        // A multi-line message (an error chain) keeps the prefix on every line, so
        // no line of output is unlabelled.
        let mut prefix = Vec::new();
        self.write_label(&mut prefix, SUPERVISOR_LABEL, Style::new().bold());
        for line in body.split('\n') {
            out.extend_from_slice(&prefix);
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
}

/// Appends `bytes` as UTF-8, each invalid sequence as U+FFFD, without allocating.
fn push_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
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

/// RFC 3339 UTC with milliseconds, written straight into the JSON string.
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// Bytes serialised as a string, invalid UTF-8 as U+FFFD, without a copy when valid.
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Lossy<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_str(self),
        }
    }
}

#[derive(Serialize)]
struct LineRecord<'a> {
    ts: Timestamp,
    worker: &'a str,
    replica: u32,
    pid: u32,
    stream: &'static str,
    line: Lossy<'a>,
    #[serde(skip_serializing_if = "is_false")]
    partial: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
        map.serialize_entry("message", &self.redactor.redact_str(&event.message))?;
        for (name, value) in &event.fields {
            let key: Cow<'_, str> = if RESERVED_KEYS.contains(&name.as_ref()) {
                Cow::Owned(format!("field_{name}"))
            } else {
                Cow::Borrowed(name)
            };
            match value {
                FieldValue::Str(v) => map.serialize_entry(&key, &self.redactor.redact_str(v))?,
                FieldValue::I64(v) => map.serialize_entry(&key, v)?,
                FieldValue::U64(v) => map.serialize_entry(&key, v)?,
                FieldValue::F64(v) => map.serialize_entry(&key, v)?,
                FieldValue::Bool(v) => map.serialize_entry(&key, v)?,
            }
        }
        map.end()
    }
}

// ---------------------------------------------------------------------------
// The sink: a bounded queue and one writer thread
// ---------------------------------------------------------------------------

/// The bounded queue between producers and the writer thread.
///
/// Hand-rolled rather than a tokio channel because two kinds of producer need to
/// wait on it: async pumps, and synchronous `tracing` callbacks, which may run on a
/// runtime thread where tokio's `blocking_send` panics. Both wait on the same
/// condition; the writer is an OS thread, so a blocked producer never holds up the
/// thing it waits for.
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer: data or close.
    data: Condvar,
    /// Wakes synchronous producers: room.
    space: Condvar,
    /// Wakes async producers: room.
    space_async: Notify,
    cap: usize,
    pool: Mutex<Vec<Vec<u8>>>,
}

struct QueueState {
    msgs: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "output sink is shut down")
}

impl Queue {
    fn new(cap: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                msgs: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            data: Condvar::new(),
            space: Condvar::new(),
            space_async: Notify::new(),
            cap,
            pool: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes when there is room. An empty queue always takes a message, so one
    /// bigger than the cap cannot wait forever.
    fn try_push(&self, st: &mut QueueState, msg: &mut Option<Vec<u8>>) -> io::Result<bool> {
        if st.closed {
            return Err(closed_error());
        }
        let len = msg.as_ref().map_or(0, Vec::len);
        if !st.msgs.is_empty() && st.bytes + len > self.cap {
            return Ok(false);
        }
        if let Some(m) = msg.take() {
            st.bytes += m.len();
            st.msgs.push_back(m);
            self.data.notify_one();
        }
        Ok(true)
    }

    async fn push(&self, msg: Vec<u8>) -> io::Result<()> {
        let mut msg = Some(msg);
        loop {
            // Registered before checking, so a wake-up between the check and the
            // await is not lost.
            let notified = self.space_async.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if self.try_push(&mut st, &mut msg)? {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    fn push_blocking(&self, msg: Vec<u8>) -> io::Result<()> {
        let mut msg = Some(msg);
        let mut st = self.lock();
        while !self.try_push(&mut st, &mut msg)? {
            st = self.space.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.data.notify_all();
        self.space.notify_all();
        self.space_async.notify_waiters();
    }

    fn room_made(&self) {
        self.space.notify_all();
        self.space_async.notify_waiters();
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(16 * 1024))
    }

    fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() > POOL_BUF_MAX {
            return;
        }
        buf.clear();
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// The writer thread: drains the queue into a buffered writer, flushing whenever the
/// queue is momentarily empty.
fn run_writer<W: Write>(queue: &Queue, writer: W, broken: &AtomicBool) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let mut batch: VecDeque<Vec<u8>> = VecDeque::new();
    let mut dirty = false;
    let mut failed = false;
    loop {
        {
            let mut st = queue.lock();
            loop {
                if !st.msgs.is_empty() {
                    std::mem::swap(&mut st.msgs, &mut batch);
                    st.bytes = 0;
                    break;
                }
                if st.closed {
                    break;
                }
                if dirty {
                    drop(st);
                    if let Err(e) = out.flush() {
                        failed = true;
                        write_failed(&e, broken);
                    }
                    dirty = false;
                    st = queue.lock();
                    continue;
                }
                st = queue.data.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
        if batch.is_empty() {
            break; // closed and drained
        }
        queue.room_made();
        for msg in batch.drain(..) {
            if !failed {
                match out.write_all(&msg) {
                    Ok(()) => dirty = true,
                    Err(e) => {
                        failed = true;
                        write_failed(&e, broken);
                    }
                }
            }
            queue.recycle(msg);
        }
    }
    if failed {
        // Dropping a BufWriter retries the write; discard instead.
        let _ = out.into_parts();
    } else if let Err(e) = out.flush() {
        write_failed(&e, broken);
    }
}

fn write_failed(e: &io::Error, broken: &AtomicBool) {
    if broken.swap(true, Ordering::SeqCst) {
        return;
    }
    if e.kind() != io::ErrorKind::BrokenPipe {
        // Our own message, but it still goes through the redactor like all others.
        let note = crate::redact::redact_message(&format!(
            "agentsup: writing output failed: {e}; further output is discarded\n"
        ));
        let _ = io::stderr().write_all(note.as_bytes());
    }
}

struct SinkInner {
    queue: Arc<Queue>,
    formatter: LineFormatter,
    redactor: SharedRedactor,
    broken: Arc<AtomicBool>,
    done: watch::Receiver<bool>,
}

impl Drop for SinkInner {
    // The last handle gone: let the writer drain and exit rather than wait forever.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The one owner of stdout. Cheap to clone; every pump and the tracing layer hold a
/// clone. Call [`OutputSink::shutdown`] before exiting so nothing queued is lost.
#[derive(Clone)]
pub struct OutputSink {
    inner: Arc<SinkInner>,
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSink")
            .field("format", &self.inner.formatter.format)
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl OutputSink {
    /// A sink writing to agentsup's stdout.
    pub fn stdout(config: OutputConfig) -> io::Result<Self> {
        Self::new(io::stdout(), config)
    }

    /// A sink writing to `writer` from a dedicated thread (tests pass a capture).
    pub fn new<W: Write + Send + 'static>(writer: W, config: OutputConfig) -> io::Result<Self> {
        Self::with_capacity(writer, config, QUEUE_BYTES)
    }

    /// Like [`OutputSink::new`] with a queue bound of `cap` bytes.
    pub fn with_capacity<W: Write + Send + 'static>(
        writer: W,
        config: OutputConfig,
        cap: usize,
    ) -> io::Result<Self> {
        let queue = Arc::new(Queue::new(cap));
        let broken = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = watch::channel(false);
        {
            let queue = Arc::clone(&queue);
            let broken = Arc::clone(&broken);
            // An OS thread, not a task: writes to stdout block, and a blocked
            // runtime worker would stall pumps that must keep draining pipes.
            std::thread::Builder::new()
                .name("agentsup-output".into())
                .spawn(move || {
                    run_writer(&queue, writer, &broken);
                    let _ = done_tx.send(true);
                })?;
        }
        Ok(OutputSink {
            inner: Arc::new(SinkInner {
                queue,
                formatter: LineFormatter::new(&config),
                redactor: config.redactor,
                broken,
                done: done_rx,
            }),
        })
    }

    /// The formatter in use.
    pub fn formatter(&self) -> &LineFormatter {
        &self.inner.formatter
    }

    /// True once writing failed (typically `EPIPE`); output is being discarded.
    pub fn is_broken(&self) -> bool {
        self.inner.broken.load(Ordering::SeqCst)
    }

    /// Prints one line for `meta`, redacted with the sink's redactor. Embedded
    /// newlines start new records. Waits while the queue is full. Pumps use a faster
    /// batched path; this is for callers with a single line in hand.
    pub async fn line(&self, meta: &LineMeta, bytes: &[u8]) -> io::Result<()> {
        let fmt = &self.inner.formatter;
        let redactor = self.inner.redactor.current();
        let prefix = fmt.prefix(meta);
        let mut buf = self.inner.queue.take_buffer();
        let mut scratch = Vec::new();
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in body.split(|&b| b == b'\n') {
            let text = redactor.redact_slice(line, &mut scratch);
            fmt.write_line(&mut buf, &prefix, meta, text, false);
        }
        self.send(buf).await
    }

    /// Prints a supervisor event. Waits while the queue is full.
    pub async fn event(&self, event: &SupervisorEvent) -> io::Result<()> {
        let buf = self.format_event(event);
        self.send(buf).await
    }

    /// Prints a supervisor event from synchronous code, blocking the thread while the
    /// queue is full.
    pub fn event_blocking(&self, event: &SupervisorEvent) -> io::Result<()> {
        let buf = self.format_event(event);
        self.inner.queue.push_blocking(buf)
    }

    fn format_event(&self, event: &SupervisorEvent) -> Vec<u8> {
        let mut buf = self.inner.queue.take_buffer();
        let redactor = self.inner.redactor.current();
        self.inner.formatter.write_event(&mut buf, event, &redactor);
        buf
    }

    async fn send(&self, buf: Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            self.inner.queue.recycle(buf);
            return Ok(());
        }
        self.inner.queue.push(buf).await
    }

    /// Writes everything queued, flushes and stops the writer. Later sends fail with
    /// `BrokenPipe`; [`OutputLayer`] then falls back to stderr.
    pub async fn shutdown(&self) {
        self.inner.queue.close();
        let mut done = self.inner.done.clone();
        // Err only if the writer thread died, in which case there is nothing to wait for.
        let _ = done.wait_for(|d| *d).await;
    }

    /// A `tracing` layer printing events through this sink.
    pub fn layer(&self) -> OutputLayer {
        OutputLayer { sink: self.clone() }
    }
}

// ---------------------------------------------------------------------------
// The pump
// ---------------------------------------------------------------------------

/// Per-pipe state, reused for every line so the hot path does not allocate.
struct PumpState {
    prefix: Vec<u8>,
    batch: Vec<u8>,
    scratch: Vec<u8>,
    stream: StreamRedactor,
    /// Set while an over-long line is in progress: the redactor it started with,
    /// so the carry always matches the automaton.
    long: Option<Arc<Redactor>>,
    /// Start of a UTF-8 sequence cut at the end of the last piece.
    utf8_hold: Vec<u8>,
}

impl PumpState {
    fn frame(
        &mut self,
        fmt: &LineFormatter,
        meta: &LineMeta,
        frame: Frame<'_>,
        current: &Arc<Redactor>,
        tail: &Mutex<Tail>,
    ) {
        let (bytes, complete) = match frame {
            Frame::Line(b) => (b, true),
            Frame::Piece(b) => (b, false),
        };
        tail.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(bytes);

        if self.long.is_none() && complete {
            let text = current.redact_slice(bytes, &mut self.scratch);
            fmt.write_line(&mut self.batch, &self.prefix, meta, text, false);
            return;
        }
        let redactor = Arc::clone(self.long.get_or_insert_with(|| Arc::clone(current)));
        self.scratch.clear();
        self.scratch.append(&mut self.utf8_hold);
        self.stream.feed(&redactor, bytes, &mut self.scratch);
        if complete {
            self.stream.finish(&redactor, &mut self.scratch);
            self.long = None;
        } else {
            let keep = self.scratch.len() - incomplete_utf8_tail(&self.scratch);
            self.utf8_hold.extend_from_slice(&self.scratch[keep..]);
            self.scratch.truncate(keep);
            if self.scratch.is_empty() {
                return; // everything is still carry
            }
        }
        fmt.write_line(
            &mut self.batch,
            &self.prefix,
            meta,
            &self.scratch,
            !complete,
        );
    }

    async fn send(&mut self, sink: &OutputSink) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.batch, sink.inner.queue.take_buffer());
        sink.send(full).await
    }
}

/// Reads `reader` (one pipe of one replica) until EOF and prints every line.
///
/// Each line is pushed unredacted into `tail`, redacted with `redactor` (before any
/// prefix or colour is added), formatted and sent to `sink`, waiting while the sink
/// is full. A last line without newline is printed at EOF; lines longer than
/// [`MAX_LINE`] are printed in pieces with the redaction carried across them.
///
/// Returns the read error, if any, after printing what was read; or `BrokenPipe`
/// if the sink was shut down first.
pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    meta: LineMeta,
    sink: OutputSink,
    redactor: SharedRedactor,
    tail: Arc<Mutex<Tail>>,
) -> io::Result<()> {
    let fmt = sink.formatter();
    let mut state = PumpState {
        prefix: fmt.prefix(&meta),
        batch: sink.inner.queue.take_buffer(),
        scratch: Vec::new(),
        stream: StreamRedactor::new(),
        long: None,
        utf8_hold: Vec::new(),
    };
    let mut framer = LineFramer::new();
    let mut buf = vec![0u8; READ_BUF];
    let result = loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        // One snapshot per read: cheap, and new secrets apply from the next read.
        let current = redactor.current();
        let mut pos = 0;
        while let Some(frame) = framer.next_frame(&buf[..n], &mut pos) {
            state.frame(fmt, &meta, frame, &current, &tail);
            if state.batch.len() >= BATCH_BYTES {
                state.send(&sink).await?;
            }
        }
        state.send(&sink).await?;
    };
    if let Some(last) = framer.finish() {
        state.frame(fmt, &meta, Frame::Line(last), &redactor.current(), &tail);
    }
    state.send(&sink).await?;
    sink.inner.queue.recycle(std::mem::take(&mut state.batch));
    result
}

// ---------------------------------------------------------------------------
// tracing integration
// ---------------------------------------------------------------------------

/// A `tracing_subscriber` layer that prints agentsup's own events through an
/// [`OutputSink`], in the same format as worker lines and redacted.
///
/// `tracing::info!(worker = "planner", replica = 0, pid = 42, "started")` prints
/// `agentsup | planner.0: started pid=42`, or in JSON
/// `{"ts":…,"worker":"agentsup","level":"info","message":"started","field_worker":"planner","replica":0,"pid":42}`.
/// Combine it with an `EnvFilter` for levels. Events wait while the sink is full;
/// after [`OutputSink::shutdown`] they go to stderr, still redacted.
#[derive(Debug, Clone)]
pub struct OutputLayer {
    sink: OutputSink,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for OutputLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = EventVisitor::default();
        event.record(&mut visitor);
        let ev = SupervisorEvent {
            level: *event.metadata().level(),
            message: visitor.message,
            fields: visitor.fields,
        };
        if self.sink.event_blocking(&ev).is_err() {
            let mut buf = Vec::new();
            let redactor = self.sink.inner.redactor.current();
            self.sink
                .inner
                .formatter
                .write_event(&mut buf, &ev, &redactor);
            let _ = io::stderr().write_all(&buf);
        }
    }
}

#[derive(Default)]
struct EventVisitor {
    message: String,
    fields: Vec<(Cow<'static, str>, FieldValue)>,
}

impl EventVisitor {
    fn add(&mut self, field: &Field, value: FieldValue) {
        // `log.*` fields come from tracing-log and only repeat the metadata.
        if !field.name().starts_with("log.") {
            self.fields.push((Cow::Borrowed(field.name()), value));
        }
    }
}

impl Visit for EventVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.add(field, FieldValue::Str(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, FieldValue::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, FieldValue::U64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, FieldValue::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, FieldValue::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.add(field, FieldValue::Str(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.add(field, FieldValue::Str(format!("{value:?}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Sensitive;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A writer that captures everything and can be held shut.
    #[derive(Clone, Default)]
    struct Capture {
        buf: Arc<Mutex<Vec<u8>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Capture {
        fn closed_gate() -> Self {
            let c = Capture::default();
            *c.gate.0.lock().unwrap() = true;
            c
        }
        fn open(&self) {
            *self.gate.0.lock().unwrap() = false;
            self.gate.1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.buf.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut shut = self.gate.0.lock().unwrap();
            while *shut {
                shut = self.gate.1.wait(shut).unwrap();
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.buf.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(framer: &mut LineFramer, reads: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        for data in reads {
            let mut pos = 0;
            while let Some(f) = framer.next_frame(data, &mut pos) {
                out.push(match f {
                    Frame::Line(b) => (true, b.to_vec()),
                    Frame::Piece(b) => (false, b.to_vec()),
                });
            }
        }
        if let Some(last) = framer.finish() {
            out.push((true, last.to_vec()));
        }
        out
    }

    fn lines(v: &[(bool, Vec<u8>)]) -> Vec<String> {
        v.iter()
            .map(|(c, b)| {
                format!(
                    "{}{}",
                    if *c { "" } else { "+" },
                    String::from_utf8_lossy(b)
                )
            })
            .collect()
    }

    #[test]
    fn framing_basic_cases() {
        let mut f = LineFramer::new();
        assert_eq!(lines(&frames(&mut f, &[b"a\nb\n"])), ["a", "b"]);
        assert_eq!(lines(&frames(&mut f, &[b"no newline"])), ["no newline"]);
        assert_eq!(
            lines(&frames(&mut f, &[b"crlf\r\nx\r\n"])),
            ["crlf\r", "x\r"]
        );
        assert_eq!(lines(&frames(&mut f, &[b"\n\na\n\n"])), ["", "", "a", ""]);
        assert_eq!(
            lines(&frames(&mut f, &[b"sp", b"li", b"t\nne", b"xt\n"])),
            ["split", "next"]
        );
        assert_eq!(lines(&frames(&mut f, &[b""])), Vec::<String>::new());
    }

    #[test]
    fn framing_long_lines_in_pieces() {
        let mut f = LineFramer::with_max(4);
        assert_eq!(lines(&frames(&mut f, &[b"abcd\n"])), ["abcd"]);
        assert_eq!(lines(&frames(&mut f, &[b"abcde\n"])), ["+abcd", "e"]);
        assert_eq!(
            lines(&frames(&mut f, &[b"ab", b"cd", b"\nxy"])),
            ["abcd", "xy"]
        );
        assert_eq!(
            lines(&frames(&mut f, &[b"ab", b"cdefghij"])),
            ["+abcd", "+efgh", "ij"]
        );
        assert_eq!(lines(&frames(&mut f, &[b"abcdefgh"])), ["+abcd", "efgh"]);
    }

    #[test]
    fn framing_one_megabyte_line() {
        let mut f = LineFramer::new();
        let mut data = vec![b'x'; 1 << 20];
        data.push(b'\n');
        let reads: Vec<&[u8]> = data.chunks(10_000).collect();
        let out = frames(&mut f, &reads);
        assert_eq!(out.len(), 16);
        assert!(out[..15].iter().all(|(c, b)| !c && b.len() == MAX_LINE));
        assert!(out[15].0);
        assert_eq!(out.iter().map(|(_, b)| b.len()).sum::<usize>(), 1 << 20);
    }

    #[test]
    fn find_newline_matches_naive() {
        let mut data = vec![b'a'; 100];
        for i in 0..100 {
            data[i] = b'\n';
            assert_eq!(find_newline(&data), Some(i));
            assert_eq!(find_newline(&data[i + 1..]), None);
            data[i] = 0x8a; // high bit set, low bits like '\n'
        }
        assert_eq!(find_newline(&[0x0b, 0x09, 0x0a]), Some(2));
    }

    #[test]
    fn utf8_tail_detection() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_utf8_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_utf8_tail(b"\xff"), 0);
    }

    #[test]
    fn tail_keeps_last_lines_and_bytes() {
        let mut t = Tail::with_limits(3, 100);
        for i in 0..5 {
            t.push(format!("line {i}").as_bytes());
        }
        assert_eq!(t.text(), "line 2\nline 3\nline 4");
        let mut t = Tail::with_limits(200, 10);
        t.push(b"aaaa");
        t.push(b"bbbb");
        t.push(b"cc");
        assert_eq!(t.text(), "bbbb\ncc");
        t.push(&[b'z'; 50]);
        assert_eq!(t.text(), "z".repeat(9));
        t.push(b"\xffok");
        assert!(t.text().ends_with("\u{FFFD}ok"));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.text(), "");
    }

    #[test]
    fn default_tail_is_bounded() {
        let mut t = Tail::new();
        for _ in 0..1000 {
            t.push(&[b'x'; 1000]);
        }
        assert!(t.len() <= TAIL_LINES);
        assert!(t.text().len() <= TAIL_BYTES);
    }

    fn meta(worker: &str, replica: u32, stream: Stream) -> LineMeta {
        LineMeta {
            worker: worker.into(),
            replica,
            pid: 4242,
            stream,
        }
    }

    fn config(format: Format, width: usize, secrets: &[(&str, &str)]) -> OutputConfig {
        OutputConfig {
            format,
            color: false,
            label_width: width,
            workers: vec!["planner".into(), "w".into()],
            redactor: SharedRedactor::new(
                secrets
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Sensitive::new(*v))),
            ),
        }
    }

    #[test]
    fn label_width_covers_workers_and_agentsup() {
        assert_eq!(label_width([("planner", 12), ("w", 1)]), "planner.11".len());
        assert_eq!(label_width([("w", 1)]), "agentsup".len());
        assert_eq!(label_width([("w", 0)]), "agentsup".len());
    }

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
        assert!(!ColorChoice::Never.for_stdout());
        assert_eq!(ColorChoice::from_flag(true), ColorChoice::Never);
    }

    #[test]
    fn json_line_shape() {
        let fmt = LineFormatter::new(&config(Format::Json, 0, &[]));
        let mut out = Vec::new();
        let m = meta("planner", 1, Stream::Stderr);
        fmt.write_line(&mut out, &fmt.prefix(&m), &m, b"he said \"hi\" \xff", false);
        fmt.write_line(&mut out, &[], &m, b"piece", true);
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(
            obj.keys().map(String::as_str).collect::<Vec<_>>(),
            ["line", "pid", "replica", "stream", "ts", "worker"]
        );
        assert_eq!(v["worker"], "planner");
        assert_eq!(v["replica"], 1);
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "he said \"hi\" \u{FFFD}");
        let ts = v["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-23T11:32:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        humantime::parse_rfc3339(ts).unwrap();
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(v["partial"], true);
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

    async fn run_pump(
        cfg: OutputConfig,
        reads: Vec<Vec<u8>>,
        m: LineMeta,
    ) -> (String, Arc<Mutex<Tail>>) {
        let cap = Capture::default();
        let redactor = cfg.redactor.clone();
        let sink = OutputSink::new(cap.clone(), cfg).unwrap();
        let (mut tx, rx) = tokio::io::duplex(1024);
        let tail = Arc::new(Mutex::new(Tail::new()));
        let task = tokio::spawn(pump(rx, m, sink.clone(), redactor, Arc::clone(&tail)));
        for r in reads {
            tx.write_all(&r).await.unwrap();
            tx.flush().await.unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
        sink.shutdown().await;
        (cap.text(), tail)
    }

    #[tokio::test]
    async fn pump_frames_redacts_and_keeps_raw_tail() {
        let cfg = config(Format::Pretty, 9, &[("OPENAI_API_KEY", "sk-0123456789")]);
        let reads = vec![
            b"hello\nkey=sk-01234".to_vec(),
            b"56789 ok\r\n\n".to_vec(),
            b"last".to_vec(),
        ];
        let (out, tail) = run_pump(cfg, reads, meta("planner", 0, Stream::Stdout)).await;
        assert_eq!(
            out,
            "planner.0 | hello\n\
             planner.0 | key=[redacted:OPENAI_API_KEY] ok\r\n\
             planner.0 | \n\
             planner.0 | last\n"
        );
        assert_eq!(
            tail.lock().unwrap().text(),
            "hello\nkey=sk-0123456789 ok\r\n\nlast"
        );
    }

    #[tokio::test]
    async fn pump_redacts_across_long_line_pieces() {
        let secret = "sk-straddle-0123456789";
        let cfg = config(Format::Json, 0, &[("K", secret)]);
        // Put the secret across the first 64 KiB boundary, and a multibyte char there.
        let mut line = vec![b'a'; MAX_LINE - 9];
        line.extend_from_slice(secret.as_bytes());
        line.extend_from_slice("é".repeat(MAX_LINE).as_bytes());
        line.extend_from_slice(secret.as_bytes());
        line.push(b'\n');
        let reads = line.chunks(7000).map(<[u8]>::to_vec).collect();
        let (out, _) = run_pump(cfg, reads, meta("w", 0, Stream::Stdout)).await;
        assert!(!out.contains("sk-straddle"), "leaked");
        let records: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(records.len() >= 3);
        let joined: String = records
            .iter()
            .map(|r| r["line"].as_str().unwrap())
            .collect();
        assert!(
            !joined.contains('\u{FFFD}'),
            "a char was cut between pieces"
        );
        assert_eq!(joined.matches("[redacted:K]").count(), 2);
        assert_eq!(joined.matches('é').count(), MAX_LINE);
        let last = records.last().unwrap();
        assert!(last.get("partial").is_none());
        assert!(
            records[..records.len() - 1]
                .iter()
                .all(|r| r["partial"] == true)
        );
    }

    #[tokio::test]
    async fn pump_handles_megabyte_line_without_newline() {
        let cfg = config(Format::Pretty, 8, &[]);
        let reads = vec![vec![b'y'; 1 << 20]];
        let (out, tail) = run_pump(cfg, reads, meta("w", 0, Stream::Stdout)).await;
        let total: usize = out.lines().map(|l| l.len() - "agentsup | ".len()).sum();
        assert_eq!(total, 1 << 20);
        assert_eq!(out.lines().count(), 16);
        assert!(tail.lock().unwrap().text().len() <= TAIL_BYTES);
    }

    #[tokio::test]
    async fn back_pressure_waits_and_never_drops() {
        let cap = Capture::closed_gate();
        let cfg = config(Format::Pretty, 8, &[]);
        // A tiny queue, and more output than the writer's own 64 KiB buffer, so the
        // writer must block in `write` and the producer must then wait.
        let sink = OutputSink::with_capacity(cap.clone(), cfg, 64).unwrap();
        let producer = {
            let sink = sink.clone();
            tokio::spawn(async move {
                let m = meta("w", 0, Stream::Stdout);
                for i in 0..2000 {
                    sink.line(&m, format!("line {i:04} {}", "x".repeat(80)).as_bytes())
                        .await
                        .unwrap();
                }
            })
        };
        // The producer must be stuck: the writer cannot write.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !producer.is_finished(),
            "producer should wait for the writer"
        );
        assert_eq!(cap.writes.load(Ordering::SeqCst), 0);
        cap.open();
        tokio::time::timeout(Duration::from_secs(20), producer)
            .await
            .expect("producer resumes")
            .unwrap();
        sink.shutdown().await;
        let text = cap.text();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 2000);
        for (i, l) in got.iter().enumerate() {
            assert_eq!(*l, format!("w.0      | line {i:04} {}", "x".repeat(80)));
        }
    }

    #[tokio::test]
    async fn broken_pipe_keeps_draining() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let sink = OutputSink::with_capacity(Broken, config(Format::Pretty, 8, &[]), 16).unwrap();
        let m = meta("w", 0, Stream::Stdout);
        tokio::time::timeout(Duration::from_secs(20), async {
            for _ in 0..1000 {
                sink.line(&m, b"into the void").await.unwrap();
            }
        })
        .await
        .expect("producers are not blocked by a dead reader");
        sink.shutdown().await;
        assert!(sink.is_broken());
        assert!(sink.line(&m, b"after").await.is_err());
    }

    #[tokio::test]
    async fn tracing_events_share_the_sink() {
        use tracing_subscriber::layer::SubscriberExt;
        let cap = Capture::default();
        let cfg = config(Format::Pretty, 9, &[("K", "sk-tracing-secret")]);
        let sink = OutputSink::new(cap.clone(), cfg).unwrap();
        let subscriber = tracing_subscriber::registry().with(sink.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(worker = "planner", replica = 1u32, pid = 9u32, "started");
            tracing::warn!(error = %"sk-tracing-secret rejected", "auth failed");
        });
        sink.shutdown().await;
        assert_eq!(
            cap.text(),
            "agentsup  | planner.1: started pid=9\n\
             agentsup  | warning: auth failed error=\"[redacted:K] rejected\"\n"
        );
    }
}
