//! Starting one template process: a private 0700 directory holding the program
//! and the socket, the spawn through the [`Spawner`] (reaper, own group,
//! PDEATHSIG), the handshake (config out, `ready` or `preload_failed` back), and
//! the relay of the template's own output into agentsup's log.
//!
//! Nothing stays on disk: the directory is removed as soon as the template has
//! connected (or failed to), since Python has read its program by then and a
//! connected socket no longer needs its path.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf, pipe};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conn::{self, Conn, Death, EXIT_GRACE, read_message};
use super::proto::{self, Message};
use super::{ForkError, TEMPLATE_SOURCE};
use crate::output::{Frame, LineFramer, OutputSink, Stream, SupervisorEvent, Tail};
use crate::process::{DEFAULT_RESET_SIGNALS, SpawnSpec, Spawner, kill_group};
use crate::reaper::ExitStatus;

/// Everything needed to start one template process.
pub(super) struct StartParams<'a> {
    pub(super) worker: Arc<str>,
    pub(super) python: &'a str,
    pub(super) env: &'a [(String, String)],
    pub(super) cwd: &'a Path,
    pub(super) config: proto::Config<'a>,
    pub(super) timeout: Duration,
    pub(super) output: Option<OutputSink>,
}

/// A 0700 directory for the template's socket and program, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> io::Result<PrivateDir> {
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..8 {
            let name = format!(
                "agentsup-fork-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            );
            // A socket path must fit in sun_path (108 bytes); a deep TMPDIR may not.
            let mut path = base.join(&name);
            if path.as_os_str().len() > 90 {
                path = Path::new("/tmp").join(&name);
            }
            // mkdir never follows a planted symlink and fails if the name exists.
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no unique name")))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Starts one template process and waits until it has preloaded (or failed to).
/// `on_death` runs once, from the reader task, when the template has gone.
pub(super) async fn start(
    params: StartParams<'_>,
    spawner: &Spawner,
    on_death: Box<dyn FnOnce(Death) + Send>,
) -> Result<Arc<Conn>, ForkError> {
    let io_err = |what: &'static str| move |source: io::Error| ForkError::Io { what, source };
    let dir = PrivateDir::create().map_err(io_err("creating a private directory"))?;
    let program = dir.0.join("agentsup_fork_template.py");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&program)
        .and_then(|mut f| f.write_all(TEMPLATE_SOURCE.as_bytes()))
        .map_err(io_err("writing the template program"))?;
    let socket = dir.0.join("control.sock");
    let listener = UnixListener::bind(&socket).map_err(io_err("binding the template socket"))?;
    let argv = vec![
        params.python.to_string(),
        path_str(&program)?,
        path_str(&socket)?,
    ];
    let spawned = spawner
        .spawn(SpawnSpec {
            argv,
            env: params.env.to_vec(),
            cwd: params.cwd.to_path_buf(),
            stdin_null: true,
            capture: true,
            own_group: true,
            creds: None,
            reset_signals: DEFAULT_RESET_SIGNALS.to_vec(),
        })
        .await?;
    let pid = spawned.pid;
    let reaped = Arc::new(AtomicBool::new(false));
    let mut exit = {
        let (tx, rx) = watch::channel(None);
        let reaped = reaped.clone();
        let waiter = spawned.exit;
        tokio::spawn(async move {
            let status = waiter.await.ok();
            reaped.store(true, Ordering::SeqCst);
            let _ = tx.send(Some(status));
        });
        ExitWatch(rx)
    };
    let tail = Arc::new(Mutex::new(Tail::with_limits(40, 16 * 1024)));
    let relays: Vec<JoinHandle<()>> = [
        (spawned.stdout, Stream::Stdout),
        (spawned.stderr, Stream::Stderr),
    ]
    .into_iter()
    .filter_map(|(pipe, stream)| {
        pipe.map(|p| {
            tokio::spawn(relay(
                p,
                stream,
                params.worker.clone(),
                params.output.clone(),
                tail.clone(),
            ))
        })
    })
    .collect();

    let handshake = handshake(&params, &listener, pid, &mut exit);
    let outcome = tokio::time::timeout(params.timeout, handshake).await;
    // The socket and the program are not needed once the template connected (or
    // failed to): nothing of ours stays on disk.
    drop(listener);
    drop(dir);
    let failure = match outcome {
        Ok(Ok((reader, writer))) => {
            let conn = Conn::new(pid, params.worker.clone(), writer, reaped);
            tokio::spawn(conn::read_loop(conn.clone(), reader, exit, on_death));
            return Ok(conn);
        }
        Ok(Err(e)) => e,
        Err(_) => ForkError::StartTimeout {
            after: params.timeout,
        },
    };
    // The template is of no use: make sure it is gone, then say why it failed.
    if !reaped.load(Ordering::SeqCst) {
        let _ = kill_group(pid, libc::SIGKILL);
    }
    let status = tokio::time::timeout(EXIT_GRACE * 2, exit.wait())
        .await
        .ok()
        .flatten();
    for r in relays {
        let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
    }
    Err(match failure {
        ForkError::TemplateExited { .. } => ForkError::TemplateExited {
            status: describe(status),
            output: redacted_tail(&tail),
        },
        other => other,
    })
}

/// Accepts the template's connection, sends the config, and waits for `ready`.
async fn handshake(
    params: &StartParams<'_>,
    listener: &UnixListener,
    pid: u32,
    exit: &mut ExitWatch,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), ForkError> {
    let exited = || ForkError::TemplateExited {
        status: String::new(),
        output: String::new(),
    };
    let stream = tokio::select! {
        accepted = listener.accept() => accepted
            .map_err(|source| ForkError::Io { what: "accepting the template's connection", source })?
            .0,
        _ = exit.wait() => return Err(exited()),
    };
    // Only our child may drive this socket (it sits in a 0700 directory anyway).
    let peer = stream.peer_cred().map_err(|source| ForkError::Io {
        what: "reading the template's credentials",
        source,
    })?;
    if peer.pid() != Some(pid as i32) {
        return Err(ForkError::Protocol(format!(
            "the template socket was connected by pid {:?}, not the template (pid {pid})",
            peer.pid()
        )));
    }
    let (read, mut write) = stream.into_split();
    let mut config = serde_json::to_vec(&params.config).map_err(|e| ForkError::Io {
        what: "encoding the template config",
        source: io::Error::other(e),
    })?;
    config.push(b'\n');
    write
        .write_all(&config)
        .await
        .map_err(|source| ForkError::Io {
            what: "configuring the template",
            source,
        })?;
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let first = read_message(&mut reader, &mut buf)
        .await
        .map_err(|e| ForkError::Protocol(e.to_string()))?;
    match first {
        Some(Message::Ready {
            pid: _,
            python,
            threads,
        }) => {
            tracing::info!(
                "{}: fork template ready (pid {pid}, Python {python}, preloaded: {})",
                params.worker,
                if params.config.preload.is_empty() {
                    "nothing".to_string()
                } else {
                    params.config.preload.join(", ")
                }
            );
            if !threads.is_empty() {
                tracing::warn!(
                    "{}: preloading started threads ({}); forked replicas will not have them, and a lock one of them held at fork time stays locked in every replica; move that import out of `preload`",
                    params.worker,
                    threads.join(", ")
                );
            }
            Ok((reader, write))
        }
        Some(Message::PreloadFailed { module, traceback }) => Err(ForkError::Preload {
            module,
            traceback: crate::redact::redact_shown(traceback.trim_end()),
        }),
        Some(other) => Err(ForkError::Protocol(format!(
            "expected `ready` from the template, got {other:?}"
        ))),
        None => Err(exited()),
    }
}

/// The template's exit status, as collected by the reaper; can be awaited any
/// number of times and from `select!`.
pub(super) struct ExitWatch(watch::Receiver<Option<Option<ExitStatus>>>);

impl ExitWatch {
    /// Waits until the template was reaped; `None` if its status was lost.
    pub(super) async fn wait(&mut self) -> Option<ExitStatus> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.flatten(),
            // The watching task is gone without a word: it panicked.
            Err(_) => None,
        }
    }
}

/// Copies the template's own output to agentsup's log (redacted by the sink) and
/// keeps its last lines for start-up errors.
async fn relay(
    mut pipe: pipe::Receiver,
    stream: Stream,
    worker: Arc<str>,
    output: Option<OutputSink>,
    tail: Arc<Mutex<Tail>>,
) {
    let mut framer = LineFramer::with_max(8 * 1024);
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut pos = 0;
        while let Some(frame) = framer.next_frame(&buf[..n], &mut pos) {
            let (Frame::Line(b) | Frame::Piece(b)) = frame;
            lines.push(String::from_utf8_lossy(b).into_owned());
        }
        for line in lines.drain(..) {
            emit(&line, stream, &worker, output.as_ref(), &tail).await;
        }
    }
    if let Some(last) = framer.finish() {
        let line = String::from_utf8_lossy(last).into_owned();
        emit(&line, stream, &worker, output.as_ref(), &tail).await;
    }
}

async fn emit(
    line: &str,
    stream: Stream,
    worker: &str,
    output: Option<&OutputSink>,
    tail: &Mutex<Tail>,
) {
    tail.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(line.as_bytes());
    let level = match stream {
        Stream::Stdout => tracing::Level::INFO,
        Stream::Stderr => tracing::Level::WARN,
    };
    let message = format!("fork template: {line}");
    match output {
        Some(sink) => {
            let event = SupervisorEvent::new(level, message).field("worker", worker);
            let _ = sink.event(&event).await;
        }
        None => {
            let message = crate::redact::global().redact_str(&message);
            if level == tracing::Level::WARN {
                tracing::warn!("{worker}: {message}");
            } else {
                tracing::info!("{worker}: {message}");
            }
        }
    }
}

/// The template's last lines for an error message: as a terminal shows them,
/// redacted (the tail itself is raw, for classification).
fn redacted_tail(tail: &Mutex<Tail>) -> String {
    let text = tail.lock().unwrap_or_else(PoisonError::into_inner).text();
    crate::redact::redact_shown(&text)
}

/// `exited with status 1`, `killed by SIGKILL`, … for messages.
pub(super) fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match s.termination {
            crate::auth::Termination::Exited(code) => format!("exited with status {code}"),
            crate::auth::Termination::Signaled(_) => format!("was killed by {}", s.termination),
        },
        None => "ended (status unknown)".to_string(),
    }
}

fn path_str(p: &Path) -> Result<String, ForkError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| ForkError::NonUtf8 {
            what: "temporary directory",
            path: p.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Sensitive;

    #[test]
    fn redacted_tail_renders_then_redacts() {
        // A value of its own: the global redactor is shared by every test.
        let key = "sk-fork-tail-9f8e7d6c5b4a3210ZyXwVu";
        crate::redact::global().extend([(
            "FORK_TAIL_TEST_KEY".to_string(),
            Sensitive::new(key.to_string()),
        )]);
        let tail = Mutex::new(Tail::with_limits(40, 16 * 1024));
        let pieces: Vec<&str> = key
            .as_bytes()
            .chunks(10)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for sep in ["\x1b[0m", "\x1b]0;t\x07", "Z\x08", "\0"] {
            tail.lock()
                .unwrap()
                .push(format!("key={}", pieces.join(sep)).as_bytes());
        }
        tail.lock().unwrap().push(format!("raw {key}").as_bytes());
        let text = redacted_tail(&tail);
        assert_eq!(
            text.matches("[redacted:FORK_TAIL_TEST_KEY]").count(),
            5,
            "{text}"
        );
        assert!(
            !text.contains(&key[..16]) && !text.contains('\x1b'),
            "{text}"
        );
    }
}
