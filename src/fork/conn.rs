//! One running template process: the reader task that routes its messages, and
//! fork requests (how it is started is in `start.rs`).
//!
//! A [`Conn`] lives exactly as long as one template process. When the socket
//! closes (the template died, or was told to stop), [`Conn::die`] fails every
//! request in flight, SIGKILLs the process group of every child whose exit was not
//! reported, and resolves their exit futures with an error, so their runs end as
//! crashes instead of hanging. The owner ([`super::ForkTemplate`]) then starts a
//! new template.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf, pipe};
use tokio::sync::{oneshot, watch};

use super::proto::{self, Message};
use super::{ForkError, ForkExit, Forked};
use crate::process::kill_group;
use crate::reaper::ExitStatus;

/// The longest line the template may send (a preload traceback is the long one).
const MAX_MESSAGE: usize = 4 << 20;

/// How long a template that closed its socket gets to exit before it is killed.
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a fork request resolves to, inside the reader.
type ForkReply = Result<(u32, oneshot::Receiver<ExitStatus>), ForkError>;

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
    /// A connection to the template `pid`, which has sent `ready`.
    pub(super) fn new(
        pid: u32,
        worker: Arc<str>,
        writer: OwnedWriteHalf,
        reaped: Arc<AtomicBool>,
    ) -> Arc<Conn> {
        let (dead_tx, dead) = watch::channel(false);
        Arc::new(Conn {
            pid,
            worker,
            writer: tokio::sync::Mutex::new(writer),
            state: Mutex::new(ConnState::default()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            reaped,
            dead,
            dead_tx,
        })
    }

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
                    // unsupervised (the same rule as crate::process's abandon).
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
        // Published before anyone is woken below: a replica whose exit future
        // resolves here asks for a new fork at once, and must not be handed this
        // connection again (it would fail with TemplateDied, a needless crash).
        let _ = self.dead_tx.send(true);
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
        let io_err = |what: &'static str| {
            move |e: nix::Error| ForkError::Io {
                what,
                source: io::Error::from(e),
            }
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
        let mut request = proto::fork_request(id, argv, cwd, env).map_err(|e| ForkError::Io {
            what: "encoding a fork request",
            source: io::Error::other(e),
        })?;
        let sent = {
            let mut writer = self.writer.lock().await;
            send_with_fds(
                &mut writer,
                &request,
                &[out_w.as_raw_fd(), err_w.as_raw_fd()],
            )
            .await
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
async fn send_with_fds(writer: &mut OwnedWriteHalf, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let sock = writer.as_ref();
    let sent = loop {
        sock.writable().await?;
        let attempt = sock.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(bytes)];
            let cmsgs = [ControlMessage::ScmRights(fds)];
            // MSG_NOSIGNAL: a dead template is an error here, not a SIGPIPE.
            sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
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

/// Reads one message; `None` at end of stream. Called only from one task, never
/// inside `select!`, so a partial line is never lost.
pub(super) async fn read_message(
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
pub(super) async fn read_loop(
    conn: Arc<Conn>,
    mut reader: BufReader<OwnedReadHalf>,
    mut exit: super::start::ExitWatch,
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
