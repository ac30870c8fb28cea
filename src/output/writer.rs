//! The writer thread: drains the queue into stdout, flushing whenever the queue is
//! momentarily empty, and copes with a stdout that fails.
//!
//! * `EPIPE` (the reader went away, `agentsup run | head`): output is discarded
//!   for the rest of the run, quietly. Blocking the workers on a reader that is
//!   gone would stall them and the shutdown forever.
//! * Any other error (`ENOSPC`, `EIO`, ...) is taken as temporary: one note on
//!   stderr, then output is dropped and counted while writes are retried with a
//!   growing pause ([`RETRY_FIRST`] up to [`RETRY_MAX`]). The first write that
//!   works again is a line saying how much was dropped, so a full disk costs
//!   lines, not the rest of the run's output.
//! * `EAGAIN` (someone made the shared stdout non-blocking): waits for it to be
//!   writable, so it behaves like a blocking stdout.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::sink::{Msg, Queue};

/// Bytes gathered before a write.
const WRITE_BUF: usize = 64 * 1024;
/// First pause after a failed write before trying again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between retries.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(5);

/// Output that was not delivered: worker lines (and their bytes) and supervisor
/// events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Undelivered {
    /// Worker lines (counted by newline).
    pub lines: u64,
    /// Bytes of those lines, as formatted.
    pub bytes: u64,
    /// agentsup's own events.
    pub events: u64,
}

impl Undelivered {
    pub(super) fn add_lines(&mut self, buf: &[u8]) {
        self.add(count_lines(buf), buf.len());
    }

    /// Adds `lines` lines of `bytes` bytes, counted by the caller.
    pub(super) fn add(&mut self, lines: u64, bytes: usize) {
        self.lines += lines;
        self.bytes += bytes as u64;
    }

    fn is_empty(&self) -> bool {
        self.lines == 0 && self.bytes == 0 && self.events == 0
    }
}

pub(super) fn count_lines(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

/// File descriptor 1, written with plain `write(2)`.
pub(super) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Descriptor 1 itself: std's `Stdout` handle is only borrowed for its
        // number, never locked or buffered through.
        Ok(nix::unistd::write(io::stdout().as_fd(), buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits up to `timeout` for `fd` to take at least `PIPE_BUF` bytes without blocking.
fn writable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    matches!(nix::poll::poll(&mut p, timeout), Ok(1))
        && p[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT))
}

/// How stdout is doing.
enum Health {
    Ok,
    /// Writes fail; output is dropped until `retry_at`.
    Failing {
        since: Instant,
        retry_at: Instant,
        pause: Duration,
        error: String,
        dropped: Undelivered,
    },
    /// `EPIPE`: nobody will ever read again.
    Broken,
}

struct Writer<'a, W: Write> {
    w: W,
    out: Vec<u8>,
    /// Newlines in `out`, from the messages' own counts.
    out_lines: u64,
    health: Health,
    queue: &'a Queue,
    broken: &'a AtomicBool,
    note: &'a dyn Fn(tracing::Level, &str) -> Vec<u8>,
}

/// Runs the writer until the queue is closed and drained, or abandoned.
pub(super) fn run<W: Write>(
    queue: &Queue,
    w: W,
    broken: &AtomicBool,
    note: &dyn Fn(tracing::Level, &str) -> Vec<u8>,
) {
    let mut wr = Writer {
        w,
        out: Vec::with_capacity(WRITE_BUF),
        out_lines: 0,
        health: Health::Ok,
        queue,
        broken,
        note,
    };
    let mut batch: VecDeque<Msg> = VecDeque::new();
    loop {
        {
            let mut st = queue.lock();
            loop {
                if st.abandoned {
                    return;
                }
                if !st.msgs.is_empty() {
                    queue.take_all(&mut st, &mut batch);
                    break;
                }
                if st.closed {
                    break;
                }
                if !wr.out.is_empty() {
                    drop(st);
                    wr.flush();
                    st = queue.lock();
                    continue;
                }
                st = queue.data.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
        if batch.is_empty() {
            break; // closed and drained
        }
        // The messages' own line counts: scanning every byte for newlines here
        // cost this thread, the one every line goes through, ~30 % of its CPU.
        let (mut lines, mut bytes) = (wr.out_lines, wr.out.len() as u64);
        for m in &batch {
            lines += m.lines;
            bytes += m.buf.len() as u64;
        }
        queue.in_flight_lines.store(lines, Ordering::SeqCst);
        queue.in_flight_bytes.store(bytes, Ordering::SeqCst);
        queue.room_made();
        for mut msg in batch.drain(..) {
            if wr.out.is_empty() {
                // Write the message's own buffer rather than a copy of it (a pump's
                // batch is usually a whole read); the old one goes back to the pool.
                std::mem::swap(&mut wr.out, &mut msg.buf);
                wr.out_lines = msg.lines;
            } else {
                wr.out.extend_from_slice(&msg.buf);
                wr.out_lines += msg.lines;
            }
            queue.recycle(msg.buf);
            if wr.out.len() >= WRITE_BUF {
                wr.flush();
            }
        }
    }
    wr.flush();
}

impl<W: Write> Writer<'_, W> {
    /// Writes `out` (or drops and counts it while stdout fails) and empties it.
    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut self.out);
        match &mut self.health {
            Health::Broken => {}
            Health::Failing {
                retry_at, dropped, ..
            } if Instant::now() < *retry_at => dropped.add_lines(&out),
            Health::Failing { .. } => self.retry(&out),
            Health::Ok => {
                if let Err((e, rest)) = self.write_all(&out) {
                    self.failed(&e, rest);
                }
            }
        }
        self.out = out;
        self.out.clear();
        self.out_lines = 0;
        self.queue.in_flight_lines.store(0, Ordering::SeqCst);
        self.queue.in_flight_bytes.store(0, Ordering::SeqCst);
    }

    /// Stdout failed before: try again, announcing the gap first.
    fn retry(&mut self, out: &[u8]) {
        let Health::Failing {
            since,
            pause,
            error,
            dropped,
            ..
        } = &self.health
        else {
            return;
        };
        let text = format!(
            "output resumed after {}: {} lines ({} bytes) and {} events were dropped while writing to stdout failed ({error})",
            humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
            dropped.lines,
            dropped.bytes,
            dropped.events,
        );
        let pause = *pause;
        let note = (self.note)(tracing::Level::WARN, &text);
        match self.write_all(&note) {
            Ok(()) => {
                self.health = Health::Ok;
                if let Err((e, rest)) = self.write_all(out) {
                    self.failed(&e, rest);
                }
            }
            Err((e, _)) if e.kind() == io::ErrorKind::BrokenPipe => self.failed(&e, out),
            Err(_) => {
                if let Health::Failing {
                    retry_at,
                    pause: p,
                    dropped,
                    ..
                } = &mut self.health
                {
                    *p = (pause * 2).min(RETRY_MAX);
                    *retry_at = Instant::now() + *p;
                    dropped.add_lines(out);
                }
            }
        }
    }

    /// A write failed with `e`; `rest` is what was not written.
    fn failed(&mut self, e: &io::Error, rest: &[u8]) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // Quiet: the reader went away on purpose (`| head`).
            self.health = Health::Broken;
            self.broken.store(true, Ordering::SeqCst);
            return;
        }
        let mut dropped = Undelivered::default();
        dropped.add_lines(rest);
        // Our own message, but it still goes through the redactor like all others.
        let note = crate::redact::redact_message(&format!(
            "agentsup: writing output failed: {e}; output is dropped (and counted) until writing works again\n"
        ));
        let _ = io::stderr().write_all(note.as_bytes());
        self.health = Health::Failing {
            since: Instant::now(),
            retry_at: Instant::now() + RETRY_FIRST,
            pause: RETRY_FIRST,
            error: e.to_string(),
            dropped,
        };
    }

    /// `write_all` that waits out `EAGAIN` and reports what was left on error.
    fn write_all<'b>(&mut self, mut buf: &'b [u8]) -> Result<(), (io::Error, &'b [u8])> {
        while !buf.is_empty() {
            match self.w.write(buf) {
                Ok(0) => return Err((io::ErrorKind::WriteZero.into(), buf)),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.queue.lock().abandoned {
                        return Err((e, buf));
                    }
                    writable(io::stdout().as_fd(), Duration::from_millis(200));
                }
                Err(e) => return Err((e, buf)),
            }
        }
        if let Err(e) = self.w.flush() {
            return Err((e, &[]));
        }
        Ok(())
    }
}

/// Says how much output could not be delivered by the shutdown deadline: on
/// stderr when that is not stdout's stream (which is the one stuck) and it takes
/// the line without blocking.
pub(super) fn report_undelivered(lost: Undelivered) {
    if lost.is_empty() {
        return;
    }
    let line = format!(
        "agentsup: stdout was not read before the shutdown deadline: {} lines ({} bytes) of worker output and {} of agentsup's events could not be delivered\n",
        lost.lines, lost.bytes, lost.events
    );
    if same_stream(io::stdout().as_fd(), io::stderr().as_fd())
        || !writable(io::stderr().as_fd(), Duration::from_millis(100))
    {
        return;
    }
    // Under PIPE_BUF and the descriptor is writable: this write does not block.
    let _ = io::stderr().write_all(line.as_bytes());
}

/// True when descriptors `a` and `b` are the same open file (or cannot be told apart).
fn same_stream(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let stat = |fd| {
        nix::sys::stat::fstat(fd)
            .ok()
            .map(|st| (st.st_dev, st.st_ino))
    };
    match (stat(a), stat(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}
