//! One running template process: how it is started (private directory, socket,
//! handshake), the reader task that routes its messages, and fork requests.
//!
//! A [`Conn`] lives exactly as long as one template process. When the socket
//! closes (the template died, or was told to stop), [`Conn::die`] fails every
//! request in flight, SIGKILLs the process group of every child whose exit was not
//! reported, and resolves their exit futures with an error, so their runs end as
//! crashes instead of hanging. The owner ([`super::ForkTemplate`]) then starts a
//! new template.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, IoSlice, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf, pipe};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::proto::{self, Message};
use super::{ForkError, ForkExit, Forked, TEMPLATE_SOURCE};
use crate::output::{Frame, LineFramer, OutputSink, Stream, SupervisorEvent, Tail};
use crate::reaper::ExitStatus;
use crate::spawn::{DEFAULT_RESET_SIGNALS, SpawnSpec, Spawner, kill_group};

/// The longest line the template may send (a preload traceback is the long one).
const MAX_MESSAGE: usize = 4 << 20;

/// How long a template that closed its socket gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a fork request resolves to, inside the reader.
type ForkReply = Result<(u32, oneshot::Receiver<ExitStatus>), ForkError>;

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

/// Why and when a template went away, for the owner's log line and backoff.
pub(super) struct Death {
    pub(super) pid: u32,
    pub(super) status: Option<ExitStatus>,
    pub(super) lived: Duration,
    pub(super) replicas_killed: usize,
}

/// A live template process and the socket to it.
pub(super) struct Conn {
    pub(super) pid: u32,
    worker: Arc<str>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    state: Mutex<ConnState>,
    next_id: AtomicU64,
    started: Instant,
    /// Set once the reaper collected the template: from then on its pid may belong
    /// to someone else and must not be signalled.
    reaped: Arc<AtomicBool>,
    dead: watch::Receiver<bool>,
    dead_tx: watch::Sender<bool>,
}

#[derive(Default)]
struct ConnState {
    dead: bool,
    /// Fork requests sent and not answered yet, by id.
    pending: HashMap<u64, oneshot::Sender<ForkReply>>,
    /// Forked children whose exit was not reported yet, by pid.
    children: HashMap<u32, oneshot::Sender<ExitStatus>>,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        // Every critical section is a few map operations; a panic cannot leave the
        // maps half-updated, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the socket closed.
    pub(super) fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    /// How long this template has been (or was) running.
    pub(super) fn lived(&self) -> Duration {
        self.started.elapsed()
    }

    /// Routes one message from the template.
    fn dispatch(&self, msg: Message) {
        let termination = msg.termination();
        match msg {
            Message::Forked { id, pid } => {
                let (tx, rx) = oneshot::channel();
                let reply = {
                    let mut st = self.state();
                    st.children.insert(pid, tx);
                    st.pending.remove(&id)
                };
                let delivered = reply.is_some_and(|r| r.send(Ok((pid, rx))).is_ok());
                if !delivered {
                    // Nobody is waiting for this child any more: it must not run
                    // unsupervised (the same rule as crate::spawn's abandon).
                    self.state().children.remove(&pid);
                    let _ = kill_group(pid, libc::SIGKILL);
                }
            }
            Message::ForkFailed { id, error } => {
                if let Some(reply) = self.state().pending.remove(&id) {
                    let error = crate::redact::global().redact_str(&error);
                    let _ = reply.send(Err(ForkError::ForkFailed(error)));
                }
            }
            Message::Exit { pid, .. } => {
                let waiter = self.state().children.remove(&pid);
                if let (Some(tx), Some(termination)) = (waiter, termination) {
                    let _ = tx.send(ExitStatus { termination });
                }
            }
            Message::Ready { .. } | Message::PreloadFailed { .. } => {
                tracing::warn!(
                    "{}: the fork template sent an unexpected message; ignored",
                    self.worker
                );
            }
        }
    }

    /// The socket closed: fail what is in flight and kill every child not reported
    /// as exited. Returns how many children were killed.
    fn die(&self) -> usize {
        let (pending, children) = {
            let mut st = self.state();
            st.dead = true;
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.children),
            )
        };
        for (_, reply) in pending {
            let _ = reply.send(Err(ForkError::TemplateDied));
        }
        let killed = children.len();
        for (pid, exit) in children {
            // The child had PR_SET_PDEATHSIG and is dying already; this also gets
            // the rest of its process group. Its exit stays unknown: dropping
            // `exit` resolves its future with an error, which runs report as a
            // crash.
            let _ = kill_group(pid, libc::SIGKILL);
            drop(exit);
        }
        let _ = self.dead_tx.send(true);
        killed
    }

    /// Kills the template and every child now (no await: used from `Drop`).
    pub(super) fn kill_now(&self) {
        let children: Vec<u32> = self.state().children.keys().copied().collect();
        for pid in children {
            let _ = kill_group(pid, libc::SIGKILL);
        }
        if !self.reaped.load(Ordering::SeqCst) {
            let _ = kill_group(self.pid, libc::SIGKILL);
        }
    }

    /// Asks the template to stop (end of stream on its socket: it kills its
    /// children and exits), and waits up to `grace` for it to go; then kills.
    pub(super) async fn close(&self, grace: Duration) {
        let _ = self.writer.lock().await.shutdown().await;
        let mut dead = self.dead.clone();
        if tokio::time::timeout(grace, dead.wait_for(|d| *d))
            .await
            .is_err()
        {
            self.kill_now();
        }
    }

    /// Forks one child with `env`. Must not be cancelled midway (a half-written
    /// request would desynchronise the socket); the owner runs it in its own task.
    pub(super) async fn fork(
        &self,
        argv: &[String],
        cwd: &str,
        env: &[(String, String)],
        reply_timeout: Duration,
    ) -> Result<Forked, ForkError> {
        let io_err = |what: &'static str| move |e: nix::Error| ForkError::Io {
            what,
            source: io::Error::from(e),
        };
        // Close-on-exec: another worker spawned meanwhile must not inherit them and
        // keep this replica's output open.
        let (out_r, out_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err("creating a pipe"))?;
        let (err_r, err_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err("creating a pipe"))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut st = self.state();
            if st.dead {
                return Err(ForkError::TemplateDied);
            }
            st.pending.insert(id, reply_tx);
        }
        let mut request =
            proto::fork_request(id, argv, cwd, env).map_err(|e| ForkError::Io {
                what: "encoding a fork request",
                source: io::Error::other(e),
            })?;
        let sent = {
            let mut writer = self.writer.lock().await;
            send_with_fds(&mut writer, &request, &[out_w.as_raw_fd(), err_w.as_raw_fd()]).await
        };
        proto::wipe(&mut request);
        // The template has its own copies now (or never will): ours must go, or the
        // replica's pipes would never reach end-of-file.
        drop((out_w, err_w));
        if let Err(source) = sent {
            self.state().pending.remove(&id);
            return Err(ForkError::Io {
                what: "sending a fork request to the template",
                source,
            });
        }
        let (pid, exit_rx) = match tokio::time::timeout(reply_timeout, reply_rx).await {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => return Err(ForkError::TemplateDied),
            Err(_) => {
                self.state().pending.remove(&id);
                // A template that does not answer is wedged (a preloaded module
                // holding a lock, say): kill it; the owner starts a new one.
                self.kill_now();
                return Err(ForkError::ReplyTimeout {
                    after: reply_timeout,
                });
            }
        };
        let to_async = |fd: OwnedFd| pipe::Receiver::from_owned_fd(fd);
        match (to_async(out_r), to_async(err_r)) {
            (Ok(stdout), Ok(stderr)) => Ok(Forked {
                pid,
                stdout: Some(stdout),
                stderr: Some(stderr),
                exit: ForkExit { pid, rx: exit_rx },
            }),
            (Err(source), _) | (_, Err(source)) => {
                let _ = kill_group(pid, libc::SIGKILL);
                Err(ForkError::Io {
                    what: "registering a replica's output pipe",
                    source,
                })
            }
        }
    }
}

/// Sends `bytes` with `fds` attached to its first byte (`SCM_RIGHTS`), then the
/// rest of `bytes` if the kernel took only part of it.
async fn send_with_fds(
    writer: &mut OwnedWriteHalf,
    bytes: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    let sock = writer.as_ref();
    let sent = loop {
        sock.writable().await?;
        let attempt = sock.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(bytes)];
            let cmsgs = [ControlMessage::ScmRights(fds)];
            // MSG_NOSIGNAL: a dead template is an error here, not a SIGPIPE.
            sendmsg::<()>(
                sock.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        });
        match attempt {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    writer.write_all(&bytes[sent..]).await
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
            let (dead_tx, dead) = watch::channel(false);
            let conn = Arc::new(Conn {
                pid,
                worker: params.worker.clone(),
                writer: tokio::sync::Mutex::new(writer),
                state: Mutex::new(ConnState::default()),
                next_id: AtomicU64::new(1),
                started: Instant::now(),
                reaped,
                dead,
                dead_tx,
            });
            tokio::spawn(read_loop(conn.clone(), reader, exit, on_death));
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
            traceback: crate::redact::global()
                .redact_str(traceback.trim_end()),
        }),
        Some(other) => Err(ForkError::Protocol(format!(
            "expected `ready` from the template, got {other:?}"
        ))),
        None => Err(exited()),
    }
}

/// The template's exit status, as collected by the reaper; can be awaited any
/// number of times and from `select!`.
struct ExitWatch(watch::Receiver<Option<Option<ExitStatus>>>);

impl ExitWatch {
    /// Waits until the template was reaped; `None` if its status was lost.
    async fn wait(&mut self) -> Option<ExitStatus> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.flatten(),
            // The watching task is gone without a word: it panicked.
            Err(_) => None,
        }
    }
}

/// Reads one message; `None` at end of stream. Called only from one task, never
/// inside `select!`, so a partial line is never lost.
async fn read_message(
    reader: &mut BufReader<OwnedReadHalf>,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Message>> {
    buf.clear();
    let n = (&mut *reader)
        .take(MAX_MESSAGE as u64)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the template sent an overlong or unterminated message",
        ));
    }
    serde_json::from_slice(buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Routes messages until the socket closes, then cleans up and reports.
async fn read_loop(
    conn: Arc<Conn>,
    mut reader: BufReader<OwnedReadHalf>,
    mut exit: ExitWatch,
    on_death: Box<dyn FnOnce(Death) + Send>,
) {
    let mut buf = Vec::new();
    loop {
        match read_message(&mut reader, &mut buf).await {
            Ok(Some(msg)) => conn.dispatch(msg),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(
                    "{}: broken fork template connection ({e}); killing the template",
                    conn.worker
                );
                break;
            }
        }
    }
    let replicas_killed = conn.die();
    let mut status = tokio::time::timeout(EXIT_GRACE, exit.wait()).await;
    if status.is_err() {
        // It closed the socket but lingers: it cannot serve anyone any more.
        if !conn.reaped.load(Ordering::SeqCst) {
            let _ = kill_group(conn.pid, libc::SIGKILL);
        }
        status = tokio::time::timeout(EXIT_GRACE, exit.wait()).await;
    }
    on_death(Death {
        pid: conn.pid,
        status: status.ok().flatten(),
        lived: conn.lived(),
        replicas_killed,
    });
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

fn redacted_tail(tail: &Mutex<Tail>) -> String {
    let text = tail.lock().unwrap_or_else(PoisonError::into_inner).text();
    crate::redact::global().redact_str(&text)
}

/// `exited with status 1`, `killed by SIGKILL`, … for messages.
pub(super) fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.termination.to_string(),
        None => "status unknown".to_string(),
    }
}

fn path_str(p: &Path) -> Result<String, ForkError> {
    p.to_str().map(str::to_owned).ok_or_else(|| ForkError::NonUtf8 {
        what: "temporary directory",
        path: p.to_path_buf(),
    })
}
