//! The sink: a bounded queue with two lanes, one writer thread owning stdout, and
//! the `tracing` layer that prints agentsup's own events through it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{Notify, watch};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::writer::{self, Undelivered, count_lines};
use super::{
    EVENT_QUEUE_BYTES, FieldValue, LineFormatter, OutputConfig, QUEUE_BYTES, SupervisorEvent,
};
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

/// One queued message: a batch of worker lines or one supervisor event.
pub(super) struct Msg {
    pub(super) buf: Vec<u8>,
    /// Newlines in `buf`, counted by whoever formatted it (a pump knows how many
    /// records it wrote), so the writer thread never scans the bytes for them.
    pub(super) lines: u64,
    pub(super) event: bool,
}

/// The bounded queue between producers and the writer thread.
///
/// Two lanes with their own budgets, kept in one FIFO so that a worker's last lines
/// are printed before the event that says it exited:
///
/// * worker lines ([`Queue::push`]) wait while their lane is full (back-pressure);
/// * supervisor events ([`Queue::push_event`]) never wait: the dispatcher and every
///   `tracing` call must go on whatever stdout does. A full event lane (stdout not
///   read for thousands of events) drops the event and counts it.
///
/// After [`Queue::abandon`] (the shutdown deadline passed with stdout still not
/// read) nothing waits any more: everything is counted as undelivered and dropped,
/// so pumps drain their pipes and agentsup can exit.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer: data, close or abandon.
    pub(super) data: Condvar,
    /// Wakes producers: room (or abandon).
    space_async: Notify,
    cap: usize,
    event_cap: usize,
    pool: Mutex<Vec<Vec<u8>>>,
    /// Set once by [`Queue::abandon`]; watched by [`OutputSink::shutdown`].
    abandoned: watch::Sender<bool>,
    /// What the writer holds but has not written yet (for the final count).
    pub(super) in_flight_lines: AtomicU64,
    pub(super) in_flight_bytes: AtomicU64,
}

pub(super) struct QueueState {
    pub(super) msgs: VecDeque<Msg>,
    line_bytes: usize,
    event_bytes: usize,
    pub(super) closed: bool,
    pub(super) abandoned: bool,
    /// Counted as never delivered: dropped after the deadline or when the event
    /// lane was full.
    lost: Undelivered,
    /// Events dropped for a full event lane and not yet reported.
    events_dropped_unreported: u64,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "output sink is shut down")
}

impl Queue {
    fn new(cap: usize, event_cap: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                msgs: VecDeque::new(),
                line_bytes: 0,
                event_bytes: 0,
                closed: false,
                abandoned: false,
                lost: Undelivered::default(),
                events_dropped_unreported: 0,
            }),
            data: Condvar::new(),
            space_async: Notify::new(),
            cap,
            event_cap,
            pool: Mutex::new(Vec::new()),
            abandoned: watch::Sender::new(false),
            in_flight_lines: AtomicU64::new(0),
            in_flight_bytes: AtomicU64::new(0),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes a batch of lines when there is room. An empty line lane always takes
    /// a message, so one bigger than the cap cannot wait forever.
    fn try_push(
        &self,
        st: &mut QueueState,
        msg: &mut Option<Vec<u8>>,
        lines: u64,
    ) -> io::Result<bool> {
        if st.abandoned {
            if let Some(m) = msg.take() {
                st.lost.add(lines, m.len());
                self.recycle(m);
            }
            return Ok(true);
        }
        if st.closed {
            return Err(closed_error());
        }
        let len = msg.as_ref().map_or(0, Vec::len);
        if st.line_bytes > 0 && st.line_bytes + len > self.cap {
            return Ok(false);
        }
        if let Some(m) = msg.take() {
            st.line_bytes += m.len();
            st.msgs.push_back(Msg {
                buf: m,
                lines,
                event: false,
            });
            self.data.notify_one();
        }
        Ok(true)
    }

    async fn push(&self, msg: Vec<u8>, lines: u64) -> io::Result<()> {
        let mut msg = Some(msg);
        loop {
            // Registered before checking, so a wake-up between the check and the
            // await is not lost.
            let notified = self.space_async.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if self.try_push(&mut st, &mut msg, lines)? {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Queues an event without ever waiting. `note` formats the line that reports
    /// earlier drops; it is called only when there is one to report, and never
    /// under the queue's lock (it takes the redactor's).
    fn push_event(&self, msg: Vec<u8>, note: impl FnOnce(u64) -> Vec<u8>) -> io::Result<()> {
        let unreported = {
            let mut st = self.lock();
            if st.abandoned {
                st.lost.events += 1;
                return Ok(());
            }
            if st.closed {
                return Err(closed_error());
            }
            if st.event_bytes + msg.len() > self.event_cap {
                st.lost.events += 1;
                st.events_dropped_unreported += 1;
                return Ok(());
            }
            std::mem::take(&mut st.events_dropped_unreported)
        };
        let note = (unreported > 0).then(|| note(unreported));
        let mut st = self.lock();
        if st.abandoned || st.closed {
            st.lost.events += 1;
            return Ok(());
        }
        for buf in note.into_iter().chain(std::iter::once(msg)) {
            st.event_bytes += buf.len();
            st.msgs.push_back(Msg {
                lines: count_lines(&buf),
                buf,
                event: true,
            });
        }
        self.data.notify_one();
        Ok(())
    }

    /// The writer takes everything queued at once.
    pub(super) fn take_all(&self, st: &mut QueueState, into: &mut VecDeque<Msg>) {
        std::mem::swap(&mut st.msgs, into);
        st.line_bytes = 0;
        st.event_bytes = 0;
    }

    fn close(&self) {
        self.lock().closed = true;
        self.data.notify_all();
        self.space_async.notify_waiters();
    }

    /// Stops waiting on stdout for good: what is queued is counted and dropped, and
    /// later output is counted and dropped on arrival.
    pub(super) fn abandon(&self) {
        {
            let mut st = self.lock();
            if st.abandoned {
                return;
            }
            st.abandoned = true;
            let msgs = std::mem::take(&mut st.msgs);
            for m in msgs {
                if m.event {
                    st.lost.events += 1;
                } else {
                    st.lost.add(m.lines, m.buf.len());
                }
            }
            st.line_bytes = 0;
            st.event_bytes = 0;
        }
        self.data.notify_all();
        self.space_async.notify_waiters();
        self.abandoned.send_replace(true);
    }

    /// Everything counted as not delivered so far, including what the writer holds.
    fn undelivered(&self) -> Undelivered {
        let mut lost = self.lock().lost;
        lost.lines += self.in_flight_lines.load(Ordering::SeqCst);
        lost.bytes += self.in_flight_bytes.load(Ordering::SeqCst);
        lost
    }

    pub(super) fn room_made(&self) {
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

pub(super) struct SinkInner {
    pub(super) queue: Arc<Queue>,
    formatter: LineFormatter,
    redactor: SharedRedactor,
    broken: Arc<AtomicBool>,
    done: watch::Receiver<bool>,
    /// Whether the undelivered count was already reported (once per sink).
    reported: AtomicBool,
}

impl Drop for SinkInner {
    // The last handle gone: let the writer drain and exit rather than wait forever.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// The one owner of stdout. Cheap to clone; every pump and the tracing layer hold a
/// clone. Call `OutputSink::shutdown` before exiting so nothing queued is lost.
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
    /// A sink writing to agentsup's stdout (file descriptor 1, written directly:
    /// the writer never holds the standard library's stdout lock, which a thread
    /// blocked on a stalled reader would keep forever).
    pub(crate) fn stdout(config: OutputConfig) -> io::Result<Self> {
        Self::new(writer::Stdout, config)
    }

    /// A sink writing to `writer` from a dedicated thread (tests pass a capture).
    pub(crate) fn new<W: Write + Send + 'static>(
        writer: W,
        config: OutputConfig,
    ) -> io::Result<Self> {
        Self::with_capacity(writer, config, QUEUE_BYTES)
    }

    /// Like [`OutputSink::new`] with a bound of `cap` bytes for worker lines.
    pub(crate) fn with_capacity<W: Write + Send + 'static>(
        writer: W,
        config: OutputConfig,
        cap: usize,
    ) -> io::Result<Self> {
        let queue = Arc::new(Queue::new(cap, EVENT_QUEUE_BYTES));
        let broken = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = watch::channel(false);
        let formatter = LineFormatter::new(&config);
        {
            let queue = Arc::clone(&queue);
            let broken = Arc::clone(&broken);
            let (fmt, redactor) = (formatter.clone(), config.redactor.clone());
            let note = move |level: tracing::Level, text: &str| {
                let mut buf = Vec::with_capacity(EVENT_BUF);
                fmt.write_event(
                    &mut buf,
                    &SupervisorEvent::new(level, text),
                    &redactor.current(),
                );
                buf
            };
            // An OS thread, not a task: writes to stdout block, and a blocked
            // runtime worker would stall pumps that must keep draining pipes.
            std::thread::Builder::new()
                .name("agentsup-output".into())
                .spawn(move || {
                    writer::run(&queue, writer, &broken, &note);
                    let _ = done_tx.send(true);
                })?;
        }
        Ok(OutputSink {
            inner: Arc::new(SinkInner {
                queue,
                formatter,
                redactor: config.redactor,
                broken,
                done: done_rx,
                reported: AtomicBool::new(false),
            }),
        })
    }

    /// The formatter in use.
    pub(crate) fn formatter(&self) -> &LineFormatter {
        &self.inner.formatter
    }

    /// True once writing failed for good (`EPIPE`); output is being discarded.
    pub(crate) fn is_broken(&self) -> bool {
        self.inner.broken.load(Ordering::SeqCst)
    }

    /// Prints one line for `meta`, redacted with the sink's redactor. Embedded
    /// newlines start new records. Waits while the queue is full. Pumps use a faster
    /// batched path; this is for callers with a single line in hand.
    #[cfg(test)]
    pub(crate) async fn line(&self, meta: &super::LineMeta, bytes: &[u8]) -> io::Result<()> {
        let fmt = &self.inner.formatter;
        let redactor = self.inner.redactor.current();
        let prefix = fmt.prefix(meta);
        let mut buf = self.inner.queue.take_buffer();
        let (mut scratch, mut rendered) = (Vec::new(), Vec::new());
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let mut lines = 0;
        for line in body.split(|&b| b == b'\n') {
            let shown = crate::redact::terminal::render_slice(line, &mut rendered);
            let text = redactor.redact_slice(shown, &mut scratch);
            fmt.write_line(&mut buf, &prefix, meta, text, false);
            lines += 1;
        }
        self.send(buf, lines).await
    }

    /// Prints a supervisor event. Never waits (see [`Queue`]).
    pub(crate) async fn event(&self, event: &SupervisorEvent) -> io::Result<()> {
        self.event_blocking(event)
    }

    /// Prints a supervisor event from synchronous code. Despite the name it never
    /// blocks: a full event lane drops the event and counts it.
    pub(crate) fn event_blocking(&self, event: &SupervisorEvent) -> io::Result<()> {
        let buf = self.format_event(event);
        self.inner.queue.push_event(buf, |n| {
            self.format_event(&SupervisorEvent::new(
                tracing::Level::WARN,
                format!("{n} of agentsup's own events were dropped: stdout was not being read"),
            ))
        })
    }

    fn format_event(&self, event: &SupervisorEvent) -> Vec<u8> {
        let mut buf = Vec::with_capacity(EVENT_BUF);
        let redactor = self.inner.redactor.current();
        self.inner.formatter.write_event(&mut buf, event, &redactor);
        buf
    }

    /// Queues `buf`, which holds `lines` records (one newline each).
    pub(super) async fn send(&self, buf: Vec<u8>, lines: u64) -> io::Result<()> {
        if buf.is_empty() {
            self.inner.queue.recycle(buf);
            return Ok(());
        }
        self.inner.queue.push(buf, lines).await
    }

    /// From `deadline` on, stops waiting on stdout: everything still queued or
    /// arriving later is counted and dropped, and [`OutputSink::shutdown`] returns
    /// even if the writer is stuck in a write. The earliest deadline set wins.
    pub(crate) fn abandon_at(&self, deadline: Instant) {
        let queue = Arc::clone(&self.inner.queue);
        let now = Instant::now();
        if deadline <= now {
            queue.abandon();
            return;
        }
        let wait = deadline - now;
        // A thread rather than a task: it must fire even if the runtime is busy
        // or gone, and it costs nothing after firing.
        let _ = std::thread::Builder::new()
            .name("agentsup-deadline".into())
            .spawn(move || {
                std::thread::sleep(wait);
                queue.abandon();
            });
    }

    /// True once [`OutputSink::abandon_at`]'s deadline passed.
    pub(crate) fn is_abandoned(&self) -> bool {
        *self.inner.queue.abandoned.borrow()
    }

    /// Writes everything queued, flushes and stops the writer; returns early when
    /// the deadline of [`OutputSink::abandon_at`] passes, and then says once (on
    /// stderr, if that is another stream and writable) how much output could not be
    /// delivered. Later sends fail with `BrokenPipe`; [`OutputLayer`] then falls
    /// back to stderr.
    pub(crate) async fn shutdown(&self) {
        self.inner.queue.close();
        let mut done = self.inner.done.clone();
        let mut abandoned = self.inner.queue.abandoned.subscribe();
        tokio::select! {
            // Err only if the writer thread died, in which case there is nothing to wait for.
            _ = done.wait_for(|d| *d) => {}
            _ = abandoned.wait_for(|a| *a) => {}
        }
        if self.is_abandoned() && !self.inner.reported.swap(true, Ordering::SeqCst) {
            writer::report_undelivered(self.inner.queue.undelivered());
        }
    }

    /// What could not be delivered so far (tests and the final report).
    #[cfg(test)]
    pub(crate) fn undelivered(&self) -> Undelivered {
        self.inner.queue.undelivered()
    }

    /// A `tracing` layer printing events through this sink.
    pub(crate) fn layer(&self) -> OutputLayer {
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
pub(crate) struct OutputLayer {
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
    use std::sync::Mutex;
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

    #[tokio::test]
    async fn events_never_wait_for_a_stalled_stdout() {
        let cap = Capture::closed_gate();
        let sink =
            OutputSink::with_capacity(cap.clone(), config(Format::Pretty, 8, &[]), 64).unwrap();
        let producer = {
            let sink = sink.clone();
            tokio::spawn(async move {
                let m = meta("w", 0, Stream::Stdout);
                for i in 0..2000 {
                    let _ = sink
                        .line(&m, format!("line {i} {}", "x".repeat(80)).as_bytes())
                        .await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!producer.is_finished(), "worker lines keep back-pressure");
        // The dispatcher's thread: 3,000 events while stdout is stuck must not block.
        let events = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..3000 {
                    sink.event_blocking(&SupervisorEvent::new(
                        tracing::Level::INFO,
                        format!("event {i} {}", "e".repeat(100)),
                    ))
                    .unwrap();
                }
            })
        };
        let waited = Instant::now();
        while !events.is_finished() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "an event waited"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dropped = sink.undelivered().events;
        assert!(
            dropped > 0,
            "3,000 events of ~130 bytes overflow the event lane"
        );
        cap.open();
        producer.await.unwrap();
        sink.event(&SupervisorEvent::new(tracing::Level::INFO, "after"))
            .await
            .unwrap();
        sink.shutdown().await;
        let text = cap.text();
        assert_eq!(text.lines().filter(|l| l.contains("| line ")).count(), 2000);
        let shown = text.lines().filter(|l| l.contains("event ")).count() as u64;
        assert_eq!(shown + dropped, 3000);
        assert!(
            text.contains(&format!("{dropped} of agentsup's own events were dropped")),
            "{text}"
        );
        assert!(text.ends_with("agentsup | after\n"));
    }

    #[tokio::test]
    async fn abandoning_stops_waiting_and_counts_what_was_lost() {
        let cap = Capture::closed_gate();
        let sink =
            OutputSink::with_capacity(cap.clone(), config(Format::Pretty, 8, &[]), 64).unwrap();
        let producer = {
            let sink = sink.clone();
            tokio::spawn(async move {
                let m = meta("w", 0, Stream::Stdout);
                for i in 0..500 {
                    sink.line(&m, format!("line {i}").as_bytes()).await.unwrap();
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!producer.is_finished());
        sink.abandon_at(Instant::now() + Duration::from_millis(200));
        tokio::time::timeout(Duration::from_secs(10), producer)
            .await
            .expect("producers stop waiting at the deadline")
            .unwrap();
        sink.event_blocking(&SupervisorEvent::new(tracing::Level::INFO, "late"))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), sink.shutdown())
            .await
            .expect("shutdown returns with the writer stuck in write");
        let lost = sink.undelivered();
        assert!(lost.lines >= 400, "{lost:?}");
        assert!(lost.events >= 1, "{lost:?}");
        assert_eq!(cap.writes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_full_disk_drops_and_counts_then_resumes_with_a_note() {
        #[derive(Clone)]
        struct Disk(Arc<AtomicBool>, Arc<Mutex<Vec<u8>>>);
        impl Write for Disk {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0.load(Ordering::SeqCst) {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                self.1.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let disk = Disk(Arc::default(), Arc::default());
        let sink = OutputSink::new(disk.clone(), config(Format::Pretty, 8, &[])).unwrap();
        let m = meta("w", 0, Stream::Stdout);
        sink.line(&m, b"before").await.unwrap();
        let settled = |sink: &OutputSink| {
            let q = &sink.inner.queue;
            q.lock().msgs.is_empty() && q.in_flight_bytes.load(Ordering::SeqCst) == 0
        };
        while !settled(&sink) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        disk.0.store(true, Ordering::SeqCst);
        for i in 0..10 {
            sink.line(&m, format!("full {i}").as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while !settled(&sink) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!sink.is_broken(), "ENOSPC is not the end of output");
        disk.0.store(false, Ordering::SeqCst);
        tokio::time::sleep(super::writer::RETRY_MAX).await;
        sink.line(&m, b"after").await.unwrap();
        sink.shutdown().await;
        let text = String::from_utf8(disk.1.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("w.0      | before\n"), "{text}");
        assert!(!text.contains("full "), "{text}");
        assert!(
            text.contains("warning: output resumed after") && text.contains("10 lines"),
            "{text}"
        );
        assert!(text.ends_with("w.0      | after\n"), "{text}");
    }
}
