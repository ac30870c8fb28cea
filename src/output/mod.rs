//! One writer owns stdout (SPEC 7): line framing, pretty/JSON records, colour, and
//! back-pressure from a slow reader to the workers.
//!
//! # Data flow
//!
//! Each stdout/stderr pipe of each replica gets a `pump` task. It reads large
//! chunks, frames them into lines ([`LineFramer`]), keeps the raw lines in the
//! replica's [`Tail`] for exit classification, redacts every line, formats it (the
//! `planner.0 | ` prefix or a JSON object) into a batch buffer, and hands the batch
//! to the [`OutputSink`]. Formatting happens in the pumps, in parallel; the single
//! writer thread only copies batches into a large buffered writer.
//!
//! # Back-pressure for worker lines, never for agentsup
//!
//! The sink's queue is bounded in bytes (`QUEUE_BYTES`). A pump that finds it full
//! waits, so it stops reading its pipe, the pipe fills, and the worker blocks in
//! `write`: a slow reader of agentsup's stdout slows the workers and no line is lost.
//!
//! agentsup's own events (the dispatcher's log lines and every `tracing` call, through
//! `OutputLayer`) have their own lane and budget (`EVENT_QUEUE_BYTES`) in the same
//! FIFO: they never wait, so the dispatcher keeps working (and the shutdown's
//! kill-at-90 % fires on time) whatever stdout does. Sharing the FIFO keeps a
//! worker's last lines before the event that reports its exit. Should the event lane
//! fill up, an event is dropped, counted, and the next one that fits says so.
//!
//! The writer flushes whenever the queue is momentarily empty, so output is prompt
//! when it trickles and written in large blocks when it floods.
//!
//! # A stdout that is not read, or fails
//!
//! At shutdown the supervisor gives stdout until the end of `shutdown_timeout`
//! (`OutputSink::abandon_at`). Past that, nothing waits on stdout any more: what is
//! queued or still arrives is counted and dropped, `OutputSink::shutdown` returns
//! even if the writer thread is stuck in `write`, and one line on stderr (if that is
//! a different, writable stream) says how much could not be delivered.
//!
//! `EPIPE` (the reader went away, as in `agentsup run | head`) discards the rest
//! quietly; other write errors (`ENOSPC`, `EIO`) are temporary: see `writer.rs`.
//! `OutputSink::is_broken` lets the supervisor decide what else to do.
//!
//! Ordering is preserved per stream (one pump per pipe, one FIFO queue), and a line is
//! never interleaved with another because each formatted line goes into one batch.
//!
//! Not here: deciding which values are secret ([`crate::redact`]) and classifying
//! exits from the tail ([`crate::auth`]).

use std::sync::Arc;

use crate::redact::SharedRedactor;

mod format;
mod frame;
mod json;
mod pump;
mod sink;
pub(crate) mod stdout;
#[cfg(test)]
mod test_support;
pub(crate) mod width;
mod writer;

pub use format::LineFormatter;
pub(crate) use format::{FieldValue, SupervisorEvent};
pub(crate) use frame::LineWatch;
pub use frame::{Frame, LineFramer, Tail};
pub(crate) use pump::{ReadWait, pump_tracked};
pub use sink::OutputSink;

/// Longest piece of a line emitted at once. Longer lines are printed as several
/// pieces, so memory per pipe stays bounded whatever a worker writes.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes the sink may hold before producers wait. The writer takes the whole queue
/// at once, so at most twice this is buffered.
pub(crate) const QUEUE_BYTES: usize = 1024 * 1024;

/// Bytes of agentsup's own events the sink may hold. Events never wait: past this
/// (thousands of events while stdout is not read) they are dropped and counted.
pub(crate) const EVENT_QUEUE_BYTES: usize = 256 * 1024;

/// The label of agentsup's own events.
pub(crate) const SUPERVISOR_LABEL: &str = "agentsup";

/// Lines and bytes [`Tail`] keeps by default (SPEC 5).
pub(crate) const TAIL_LINES: usize = 200;
/// See [`TAIL_LINES`].
pub(crate) const TAIL_BYTES: usize = 64 * 1024;

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
    pub(crate) fn as_str(self) -> &'static str {
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

/// Width of the widest label (`name.N` for the highest replica, or `agentsup`), for
/// [`OutputConfig::label_width`]. Takes `(worker name, replica count)`.
pub(crate) fn label_width<'a>(workers: impl IntoIterator<Item = (&'a str, u32)>) -> usize {
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
    /// Colour pretty output (decided by `stdout::want_color`).
    pub color: bool,
    /// Labels are padded to this width (see `label_width`).
    pub label_width: usize,
    /// Worker names in config order; colours are assigned in this order so that
    /// neighbours differ. Unknown names get a colour from a hash of the name.
    pub workers: Vec<String>,
    /// Redacts supervisor events and `OutputSink::line`. Defaults to
    /// [`crate::redact::global`].
    pub redactor: SharedRedactor,
    /// Pretty events wrap to this many columns, continuation lines indented
    /// (see `width::stdout_width`); `None` keeps each line whole. Worker lines
    /// are the worker's and never wrap.
    pub width: Option<usize>,
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
            width: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_width_covers_workers_and_agentsup() {
        assert_eq!(label_width([("planner", 12), ("w", 1)]), "planner.11".len());
        assert_eq!(label_width([("w", 1)]), "agentsup".len());
        assert_eq!(label_width([("w", 0)]), "agentsup".len());
    }
}
