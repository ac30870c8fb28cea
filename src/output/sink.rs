//! The sink: a bounded queue, one writer thread owning stdout, and the `tracing`
//! layer that prints agentsup's own events through it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, watch};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::{FieldValue, LineFormatter, LineMeta, OutputConfig, QUEUE_BYTES, SupervisorEvent};
use crate::redact::SharedRedactor;

/// Pump batch buffers kept for reuse. The queue holds at most [`QUEUE_BYTES`], so
/// about that much in batches is in flight at once; keeping more than that would
/// only hold memory after a burst of output.
const POOL_MAX: usize = 16;
/// A new pump batch buffer; pumps send at 128 KiB, so most batches grow once or
/// twice at most.
const POOL_BUF_NEW: usize = 16 * 1024;
/// Buffers outside this range are freed rather than pooled: small ones are event
/// lines (not worth a pump's while), huge ones came from a pathological line.
const POOL_BUF_MIN: usize = POOL_BUF_NEW;
const POOL_BUF_MAX: usize = 256 * 1024;
/// Room for one supervisor event line, so that an event does not take (and touch)
/// a pump-sized buffer: 200 replicas starting print 200 events at once.
const EVENT_BUF: usize = 256;

/// The bounded queue between producers and the writer thread.
///
/// Hand-rolled rather than a tokio channel because two kinds of producer need to
/// wait on it: async pumps, and synchronous `tracing` callbacks, which may run on a
/// runtime thread where tokio's `blocking_send` panics. Both wait on the same
/// condition; the writer is an OS thread, so a blocked producer never holds up the
/// thing it waits for.
pub(super) struct Queue {
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

    pub(super) fn take_buffer(&self) -> Vec<u8> {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(POOL_BUF_NEW))
    }

    pub(super) fn recycle(&self, mut buf: Vec<u8>) {
        if !(POOL_BUF_MIN..=POOL_BUF_MAX).contains(&buf.capacity()) {
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

pub(super) struct SinkInner {
    pub(super) queue: Arc<Queue>,
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
    pub(super) inner: Arc<SinkInner>,
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
        let (mut scratch, mut rendered) = (Vec::new(), Vec::new());
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in body.split(|&b| b == b'\n') {
            let shown = crate::redact::terminal::render_slice(line, &mut rendered);
            let text = redactor.redact_slice(shown, &mut scratch);
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
        let mut buf = Vec::with_capacity(EVENT_BUF);
        let redactor = self.inner.redactor.current();
        self.inner.formatter.write_event(&mut buf, event, &redactor);
        buf
    }

    pub(super) async fn send(&self, buf: Vec<u8>) -> io::Result<()> {
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
    use crate::output::test_support::{Capture, config, meta};
    use crate::output::{Format, Stream};
    use std::time::Duration;

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
