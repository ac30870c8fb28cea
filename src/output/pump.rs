//! The pump: reads one pipe of one replica, frames, redacts, formats and batches
//! its lines into the sink.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::json::LineClock;
use super::{Frame, LineFormatter, LineFramer, LineMeta, OutputSink, Tail};
use crate::redact::{Redactor, SharedRedactor, ShownLines};

/// Size of each pump's read buffer.
const READ_BUF: usize = 64 * 1024;
/// First read buffer of a pipe; grows ×4 up to [`READ_BUF`] while reads fill it.
const READ_BUF_START: usize = 256;

/// A pump sends its batch once it is this big, even mid-read (JSON can grow a read).
const BATCH_BYTES: usize = 128 * 1024;

/// Per-pipe state, reused for every line so the hot path does not allocate.
struct PumpState {
    prefix: Vec<u8>,
    batch: Vec<u8>,
    /// Records (one newline each) in `batch`.
    batch_lines: u64,
    /// Lines as a terminal shows them, redacted (the same as `exec` prints).
    shown: ShownLines,
    /// JSON `ts`, read once per read from the pipe rather than once per line.
    clock: LineClock,
}

impl PumpState {
    fn frame(
        &mut self,
        fmt: &LineFormatter,
        meta: &LineMeta,
        frame: Frame<'_>,
        current: &Arc<Redactor>,
        tail: &mut Tail,
    ) {
        let (bytes, complete) = match frame {
            Frame::Line(b) => (b, true),
            Frame::Piece(b) => (b, false),
        };
        tail.push(bytes);
        // Redacted as shown: escape sequences or backspaces between pieces of a
        // key must not hide it (issue 12).
        let Some(text) = self.shown.redact(bytes, complete, current) else {
            return; // everything is still carry
        };
        fmt.write_line_at(
            &mut self.batch,
            &self.prefix,
            meta,
            text,
            !complete,
            &mut self.clock,
        );
        self.batch_lines += 1;
    }

    async fn send(&mut self, sink: &OutputSink) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // The next read takes a fresh pooled buffer; an idle pipe holds none.
        let full = std::mem::take(&mut self.batch);
        sink.send(full, std::mem::take(&mut self.batch_lines)).await
    }
}

/// Whether a pump is waiting for its pipe (as opposed to formatting, or waiting
/// for room in a full sink). After a worker exits, only time spent waiting to read
/// means someone else holds its output open; time blocked on a slow reader of
/// agentsup's stdout does not (see `supervisor::run_task`).
#[derive(Debug, Default)]
pub(crate) struct ReadWait(AtomicBool);

impl ReadWait {
    /// True while the pump is blocked reading its pipe.
    pub(crate) fn waiting(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// [`pump`] that also reports through `wait` when it is blocked reading.
pub(crate) async fn pump_tracked<R: AsyncRead + Unpin>(
    reader: R,
    meta: LineMeta,
    sink: OutputSink,
    redactor: SharedRedactor,
    tail: Arc<Mutex<Tail>>,
    wait: Arc<ReadWait>,
) -> io::Result<()> {
    pump_inner(reader, meta, sink, redactor, tail, Some(&wait)).await
}

/// Reads `reader` (one pipe of one replica) until EOF and prints every line.
///
/// Each line is pushed unredacted into `tail`, redacted with `redactor` (before any
/// prefix or colour is added), formatted and sent to `sink`, waiting while the sink
/// is full. A last line without newline is printed at EOF; lines longer than
/// [`MAX_LINE`](super::MAX_LINE) are printed in pieces with the redaction carried across them.
///
/// Returns the read error, if any, after printing what was read; or `BrokenPipe`
/// if the sink was shut down first.
#[cfg(test)]
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    meta: LineMeta,
    sink: OutputSink,
    redactor: SharedRedactor,
    tail: Arc<Mutex<Tail>>,
) -> io::Result<()> {
    pump_inner(reader, meta, sink, redactor, tail, None).await
}

async fn pump_inner<R: AsyncRead + Unpin>(
    mut reader: R,
    meta: LineMeta,
    sink: OutputSink,
    redactor: SharedRedactor,
    tail: Arc<Mutex<Tail>>,
    wait: Option<&ReadWait>,
) -> io::Result<()> {
    let fmt = sink.formatter();
    let mut state = PumpState {
        prefix: fmt.prefix(&meta),
        // Buffers are taken on the first read, not up front: 200 idle workers must
        // not hold 400 pooled batches (supervisor RSS, and fork() cost with it).
        batch: Vec::new(),
        batch_lines: 0,
        shown: ShownLines::new(),
        clock: LineClock::new(),
    };
    let mut framer = LineFramer::new();
    // Start small and grow to READ_BUF only for a pipe that fills the buffer:
    // most workers print little, and a 64 KiB buffer per pipe adds up.
    let mut buf = vec![0u8; READ_BUF_START];
    let result = loop {
        if let Some(w) = wait {
            w.0.store(true, Ordering::Relaxed);
        }
        let read = reader.read(&mut buf).await;
        if let Some(w) = wait {
            w.0.store(false, Ordering::Relaxed);
        }
        let n = match read {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        if state.batch.capacity() == 0 {
            state.batch = sink.inner.queue.take_buffer();
        }
        // One snapshot per read: cheap, and new secrets apply from the next read.
        let current = redactor.current();
        state.clock.tick();
        let mut pos = 0;
        loop {
            // The tail is locked once per batch, not per line: an uncontended
            // lock per line was ~4 % of a log flood's CPU (W2). Never held
            // across an await.
            let more = {
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                let mut more = false;
                while let Some(frame) = framer.next_frame(&buf[..n], &mut pos) {
                    state.frame(fmt, &meta, frame, &current, &mut tail);
                    if state.batch.len() >= BATCH_BYTES {
                        more = true;
                        break;
                    }
                }
                more
            };
            state.send(&sink).await?;
            if !more {
                break;
            }
        }
        if n == buf.len() && buf.len() < READ_BUF {
            buf.resize((buf.len() * 4).min(READ_BUF), 0);
        }
    };
    if let Some(last) = framer.finish() {
        state.clock.tick();
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        state.frame(
            fmt,
            &meta,
            Frame::Line(last),
            &redactor.current(),
            &mut tail,
        );
        drop(tail);
    }
    state.send(&sink).await?;
    if state.batch.capacity() > 0 {
        sink.inner.queue.recycle(std::mem::take(&mut state.batch));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_support::{Capture, config, meta};
    use crate::output::{Format, MAX_LINE, OutputConfig, Stream, TAIL_BYTES};
    use tokio::io::AsyncWriteExt;

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
             planner.0 | key=[redacted:OPENAI_API_KEY] ok\n\
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
    async fn pump_redacts_what_a_terminal_shows() {
        let key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
        let pieces: Vec<&str> = key
            .as_bytes()
            .chunks(12)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let mut reads = Vec::new();
        for sep in ["\x1b[0m", "\x1b]0;title\x07", "Z\x08", "\0", "\u{9b}1m"] {
            reads.push(format!("k={}\n", pieces.join(sep)).into_bytes());
        }
        reads.push(b"\ragentsup | warning: forged\n".to_vec());
        for format in [Format::Pretty, Format::Json] {
            let cfg = config(format, 8, &[("OPENAI_API_KEY", key)]);
            let (out, tail) = run_pump(cfg, reads.clone(), meta("w", 0, Stream::Stdout)).await;
            assert!(!out.contains(&key[..12]), "{out}");
            assert!(
                !out.contains('\x1b') && !out.contains("\\u001b") && !out.contains('\r'),
                "{out}"
            );
            assert_eq!(out.matches("[redacted:OPENAI_API_KEY]").count(), 5, "{out}");
            assert!(
                tail.lock().unwrap().text().contains("\x1b[0m"),
                "the tail stays raw"
            );
            if format == Format::Pretty {
                assert!(
                    out.contains("w.0      | agentsup | warning: forged\n"),
                    "{out}"
                );
            }
        }
    }

    #[tokio::test]
    async fn pump_renders_long_line_pieces() {
        let key = "sk-straddle-0123456789abcdef";
        let cfg = config(Format::Pretty, 0, &[("K", key)]);
        let mut line = vec![b'a'; MAX_LINE - 9];
        line.extend_from_slice(&key.as_bytes()[..12]);
        line.extend_from_slice(b"\x1b[0m");
        line.extend_from_slice(&key.as_bytes()[12..]);
        // A C1 CSI (U+009B) cut between two pieces must not come out joined.
        line.resize(2 * MAX_LINE - 1, b'b');
        line.extend_from_slice("\u{9b}".as_bytes());
        line.extend_from_slice(b"1mxyz\n");
        let reads = line.chunks(5000).map(<[u8]>::to_vec).collect();
        let (out, _) = run_pump(cfg, reads, meta("w", 0, Stream::Stdout)).await;
        assert!(!out.contains("sk-straddle"), "leaked");
        assert_eq!(out.matches("[redacted:K]").count(), 1);
        assert!(!out.contains('\u{9b}') && !out.contains('\x1b'));
        assert!(out.trim_end().ends_with("bxyz"));
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
}
