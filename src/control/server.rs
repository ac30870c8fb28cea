//! The supervisor's side: claim the socket for one config, then answer requests.
//!
//! Claiming is what keeps two `agentsup run` of one config apart:
//!
//! 1. An exclusive `flock` on the config's lock file at every usable place (the
//!    `lock` module: `$XDG_RUNTIME_DIR/agentsup/`, `/run/user/<uid>/agentsup/`,
//!    `/tmp/agentsup-<uid>/`, and beside the config when `/tmp/agentsup-<uid>` is
//!    another user's), held until exit, so a run from a login shell and one from
//!    cron meet. The lock file holds our pid, for the refusal message.
//! 2. With the lock held, **every** candidate socket is probed: one that answers,
//!    served by our uid or root, means a live supervisor (refuse, naming its pid
//!    from `SO_PEERCRED`); one of ours that is refused was left by a run that was
//!    killed (removed); one of another user is not ours and ignored.
//! 3. `bind` at the first usable place under a temporary name, `chmod 0600`, then
//!    `rename` into place, so the socket never appears at its path with a looser
//!    mode. The umask is process-wide and would race with the workers being
//!    spawned, so it is never touched; the directory is one no other user can
//!    write, and every connection's peer uid is checked as well.
//!
//! The socket and the lock files are removed when the [`ControlListener`] is
//! dropped: at process exit, when the runtime drops the accept task that owns it.
//! What a killed run left (lock files nobody holds, sockets nobody answers) is
//! removed by the next start that shares the directory.

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::conns::{Conns, FIRST_REQUEST, IDLE, Slot};
use super::lock::{self, file_id};
use super::path::{self, Candidate};
use super::wire::{self, MAX_REQUEST};
use crate::status::{ControlRequest, ControlResponse, Status};

/// Where `restart` and `reload` go: the dispatcher, which answers on the oneshot.
type Requests = mpsc::UnboundedSender<(ControlRequest, oneshot::Sender<ControlResponse>)>;

/// How long the probe of an existing socket may take before we call it alive.
const PROBE: Duration = Duration::from_secs(5);

/// The bound control socket of a running supervisor. Dropping it removes the
/// socket and its lock file.
pub(crate) struct ControlListener {
    listener: UnixListener,
    claim: Claim,
}

impl ControlListener {
    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.claim.socket
    }
}

impl std::fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlListener")
            .field("socket", &self.claim.socket)
            .finish_non_exhaustive()
    }
}

/// What we own on disk while running. The socket is removed first, then the
/// lock files (the `locks` field is dropped after `drop` ran).
struct Claim {
    socket: PathBuf,
    /// `(dev, ino)` of the socket we bound, once bound: on exit we remove the path
    /// only if it is still ours.
    socket_id: Option<(u64, u64)>,
    locks: lock::Locks,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(id) = self.socket_id {
            if file_id(&self.socket) == Some(id) {
                let _ = std::fs::remove_file(&self.socket);
            }
        }
    }
}

/// See [`super::bind`].
pub(super) async fn bind(config: &Path) -> Result<ControlListener, String> {
    let canonical = path::canonical_config(config);
    let uid = path::euid();
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR");
    let candidates = path::candidates(&canonical, runtime_dir.as_deref(), uid);
    // The lock first, at every place this config's runs may look (see the lock
    // module): whoever holds it owns every candidate socket path, so removing a
    // stale socket can never remove a live one that a run starting at the same
    // moment just bound.
    let locks = match lock::take(&canonical, runtime_dir.as_deref(), uid) {
        Ok(locks) => locks,
        Err(lock::Refused::Busy(lock_path)) => {
            let live = find_live(&candidates, uid).await;
            return Err(already_running(&canonical, live, &lock_path));
        }
        // Names the lock file or the config, and what to do.
        Err(lock::Refused::Failed(why)) => return Err(why),
    };
    let lock_path = locks
        .paths()
        .next()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Every candidate probed before one is claimed: a supervisor of this config
    // started before the lock moved here, or by root, may serve any of them.
    for c in &candidates {
        match probe(&c.socket, uid).await {
            Probe::Live(pid) => {
                return Err(already_running(
                    &canonical,
                    Some((pid, c.socket.clone())),
                    &lock_path,
                ));
            }
            Probe::Stale => {
                tracing::debug!("removing stale control socket {}", c.socket.display());
                let _ = std::fs::remove_file(&c.socket);
            }
            Probe::Absent | Probe::NotOurs => {}
        }
    }
    let mut skipped = Vec::new();
    let mut chosen: Option<Candidate> = None;
    for c in candidates {
        match path::check(&c, uid, true) {
            Ok(()) => {
                chosen = Some(c);
                break;
            }
            Err(why) => skipped.push(why),
        }
    }
    let Some(c) = chosen else {
        return Err(format!(
            "no usable place for the control socket of {}: {}",
            canonical.display(),
            skipped.join("; ")
        ));
    };
    let socket = c.socket;
    let mut claim = Claim {
        socket: socket.clone(),
        socket_id: None,
        locks,
    };
    in_the_way(&canonical, &socket)?;
    // Bind under a temporary name, make it 0600, then rename it into place: the
    // socket never appears at its real path with a looser mode (the umask is
    // process-wide, so it is not touched).
    let tmp = socket.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| {
        format!(
            "cannot create the control socket {} for {}: {e}",
            socket.display(),
            canonical.display()
        )
    })?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, &socket));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "cannot make the control socket {} private (chmod 0600, rename): {e}",
            socket.display()
        ));
    }
    claim.socket_id = file_id(&socket);
    // In the background: start-up does not wait on another run's leftovers.
    let ours: Vec<std::path::PathBuf> = claim.locks.paths().map(Path::to_path_buf).collect();
    tokio::spawn(sweep(ours, uid));
    Ok(ControlListener { listener, claim })
}

/// How long one run may spend removing what killed runs left behind.
const SWEEP: Duration = Duration::from_secs(2);

/// Removes, from the directories holding our lock files, the lock files of other
/// configs that nobody holds, and their sockets when nobody answers there: what
/// runs that were killed left behind (a clean exit removes its own). Each is
/// locked while we look, so a run of that config starting now is not disturbed.
async fn sweep(ours: Vec<std::path::PathBuf>, uid: u32) {
    use std::os::unix::ffi::OsStrExt;
    let deadline = std::time::Instant::now() + SWEEP;
    let mut removed = 0usize;
    // Not the config's own directory: only our lock directories hold other
    // configs' files.
    let dirs: Vec<&Path> = ours
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.as_bytes().starts_with(b"."))
        })
        .filter_map(|p| p.parent())
        .collect();
    for dir in dirs {
        for path in lock::others_in(dir, &ours) {
            if std::time::Instant::now() > deadline {
                break;
            }
            let Some(stale) = lock::take_stale(&path) else {
                continue;
            };
            let socket = path.with_extension("sock");
            if let Probe::Stale = probe(&socket, uid).await {
                let _ = std::fs::remove_file(&socket);
            }
            drop(stale);
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::debug!("removed {removed} lock file(s) left by runs that were killed");
    }
}

/// What is at a candidate socket path.
enum Probe {
    /// Nothing (or nothing we can see).
    Absent,
    /// A socket file of another user, or a server of another user: neither ours
    /// nor a reason to refuse to start.
    NotOurs,
    /// Ours, and nobody answers: left by a run that was killed.
    Stale,
    /// A supervisor of ours (or root's) answers: its pid (0 if unknown).
    Live(u32),
}

/// Probes `socket` for a supervisor of `uid` (or root).
async fn probe(socket: &Path, uid: u32) -> Probe {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(socket) else {
        return Probe::Absent;
    };
    if !meta.file_type().is_socket() {
        // Not a socket: reported if it is in the way of the one we bind.
        return Probe::Absent;
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Probe::NotOurs;
    }
    match tokio::time::timeout(PROBE, UnixStream::connect(socket)).await {
        Ok(Ok(s)) => match s.peer_cred() {
            Ok(c) if c.uid() == uid || c.uid() == 0 => Probe::Live(
                c.pid()
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or_default(),
            ),
            _ => Probe::NotOurs,
        },
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
            if meta.uid() == uid {
                Probe::Stale
            } else {
                Probe::NotOurs
            }
        }
        // Could not tell (busy, stuck): never remove a socket someone may be
        // serving.
        _ => Probe::Live(0),
    }
}

/// The first live supervisor of ours among `candidates`: its pid and socket.
async fn find_live(candidates: &[Candidate], uid: u32) -> Option<(u32, PathBuf)> {
    for c in candidates {
        if let Probe::Live(pid) = probe(&c.socket, uid).await {
            return Some((pid, c.socket.clone()));
        }
    }
    None
}

/// A file that is not a socket at the path we are about to bind.
fn in_the_way(canonical: &Path, socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(socket) {
        Ok(m) if !m.file_type().is_socket() => Err(format!(
            "{} is in the way of the control socket for {}: it is not a socket; remove it if it is not yours",
            socket.display(),
            canonical.display()
        )),
        _ => Ok(()),
    }
}

/// The refusal of a second `agentsup run`, naming the running one's pid: from
/// the live socket's peer credentials, else from the lock file.
fn already_running(canonical: &Path, live: Option<(u32, PathBuf)>, lock_path: &Path) -> String {
    let pid = live
        .as_ref()
        .map(|(p, _)| *p)
        .filter(|&p| p != 0)
        .or_else(|| {
            std::fs::read_to_string(lock_path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        });
    let who = match pid {
        Some(p) => format!("pid {p}"),
        None => "pid unknown".to_string(),
    };
    let config = canonical.display();
    let place = match &live {
        Some((_, socket)) => format!("its control socket is {}", socket.display()),
        None => format!("it holds the lock {}", lock_path.display()),
    };
    format!(
        "another agentsup run ({who}) is already supervising {config}; {place}\n  hint: see it with `agentsup status -c {config}`, or stop it{} before starting another",
        pid.map(|p| format!(" (kill {p})")).unwrap_or_default()
    )
}

/// See [`super::serve`].
pub(super) fn serve(
    listener: ControlListener,
    status: watch::Receiver<Arc<Status>>,
    requests: Requests,
) {
    if let Some(w) = &listener.claim.locks.warning {
        tracing::warn!("{w}");
    }
    tracing::info!("control socket: {}", listener.path().display());
    tokio::spawn(accept_loop(listener, status, requests));
}

async fn accept_loop(
    listener: ControlListener,
    status: watch::Receiver<Arc<Status>>,
    requests: Requests,
) {
    // `listener` (and so the socket file) lives exactly as long as this task: the
    // runtime drops it at process exit.
    let conns = Conns::default();
    let me = path::euid();
    let warned = Warned::default();
    loop {
        match listener.listener.accept().await {
            Ok((stream, _)) => {
                conns.make_room().await;
                let slot = conns.open();
                let id = slot.id();
                let (status, requests) = (status.clone(), requests.clone());
                let warned = warned.clone();
                let task = tokio::spawn(async move {
                    connection(stream, me, status, requests, warned, &slot).await;
                    drop(slot);
                });
                // After the spawn: the task may have ended already, then this
                // finds nothing to update.
                conns.set_abort(id, task.abort_handle());
            }
            Err(e) => {
                // EMFILE and the like: say so, and pause so a lasting error does
                // not spin a core.
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn refuse(message: impl Into<String>) -> ControlResponse {
    ControlResponse {
        ok: false,
        message: message.into(),
        status: None,
    }
}

/// Processes whose refusal was logged already: one warning per worker, not one
/// per attempt of a worker stuck in a loop. Bounded; past the bound, no more
/// warnings (the clients are still refused).
type Warned = Arc<std::sync::Mutex<std::collections::HashSet<u32>>>;
const MAX_WARNED: usize = 1024;

/// The refusal for a client that runs under agentsup (SO_PEERCRED pid `peer`), or
/// `None` for one that does not: the operator's shell, `kubectl exec`, cron.
fn refuse_descendant(
    peer: u32,
    status: &watch::Receiver<Arc<Status>>,
    warned: &Warned,
) -> Option<ControlResponse> {
    let top = crate::procfs::descends_from(peer, std::process::id())?;
    let label = status
        .borrow()
        .replicas
        .iter()
        .find(|r| r.pid == Some(top))
        .map(|r| format!("worker {}.{}, pid {top}", r.worker, r.replica));
    let who = label.unwrap_or_else(|| format!("a process agentsup started, pid {top}"));
    let first = {
        let mut w = warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.len() < MAX_WARNED && w.insert(top)
    };
    if first {
        tracing::warn!(
            "control socket: refused a client (pid {peer}) running under agentsup ({who}): workers may not drive the supervisor; further attempts from it are refused silently"
        );
    }
    Some(refuse(format!(
        "refused: this client (pid {peer}) runs under agentsup ({who}); workers may not drive the supervisor. Run status, restart and reload from outside the supervised processes (the operator's shell, `docker exec`, `kubectl exec`)"
    )))
}

/// Serves one connection: requests are answered in order until EOF, an idle
/// timeout, or a request too long to be one.
async fn connection(
    stream: UnixStream,
    me: u32,
    status: watch::Receiver<Arc<Status>>,
    requests: Requests,
    warned: Warned,
    slot: &Slot,
) {
    let peer = stream.peer_cred();
    let (read, mut write) = stream.into_split();
    let mut send = async |r: &ControlResponse| {
        let mut line = wire::encode_response(r);
        line.push('\n');
        write.write_all(line.as_bytes()).await.is_ok()
    };
    // The socket is 0600 in a 0700 directory already; this also holds where the
    // directory is shared, and between bind and chmod.
    let peer = match peer {
        Ok(c) if c.uid() == me || c.uid() == 0 => c,
        _ => {
            let _ = send(&refuse(
                "permission denied: only the user running agentsup may use its control socket",
            ))
            .await;
            return;
        }
    };
    // Workers run as our uid, so the uid says nothing about who is asking: the
    // operator's shell is never below agentsup, a worker always is.
    // The answer waits for the request line: a client still writing when we close
    // would see EPIPE instead of the reason.
    // A client whose process is already gone cannot be placed, so it is refused
    // too: otherwise a worker could connect from a child that exits at once and
    // send requests on the inherited socket. The operator's client lives until
    // its answer comes.
    let refusal = match peer.pid().and_then(|p| u32::try_from(p).ok()) {
        Some(p) if crate::procfs::parent(p).is_some() => refuse_descendant(p, &status, &warned),
        _ => Some(refuse(
            "refused: the process that opened this connection is gone, so agentsup cannot tell \
             whether it runs under agentsup; run the command from the operator's shell (a \
             process that stays alive until it gets its answer)",
        )),
    };
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(MAX_REQUEST as u64 + 1);
        // Waiting for a request: closed when silent too long, or to make room.
        slot.idle();
        let patience = if first { FIRST_REQUEST } else { IDLE };
        first = false;
        let n = match tokio::time::timeout(patience, limited.read_until(b'\n', &mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if buf.len() > MAX_REQUEST {
            let _ = send(&refuse(format!(
                "request too long (more than {MAX_REQUEST} bytes); send one JSON object per line"
            )))
            .await;
            return;
        }
        slot.busy();
        if let Some(refusal) = refusal {
            let _ = send(&refusal).await;
            return;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = answer(&buf, &status, &requests).await;
        if !send(&response).await {
            return;
        }
    }
}

/// The answer to one request line.
async fn answer(
    line: &[u8],
    status: &watch::Receiver<Arc<Status>>,
    requests: &Requests,
) -> ControlResponse {
    let req = match serde_json::from_slice::<ControlRequest>(line) {
        Ok(r) => r,
        Err(e) => {
            return refuse(format!(
                "malformed request ({e}); send one JSON object per line: {{\"cmd\":\"status\"}}, {{\"cmd\":\"restart\",\"target\":\"NAME[.N]\"}} or {{\"cmd\":\"reload\"}}"
            ));
        }
    };
    match req {
        // Straight from the last snapshot: no round trip through a dispatcher that
        // may be busy with a shutdown or a burst of exits.
        ControlRequest::Status => {
            let mut s = status.borrow().aged();
            if s.pid == 0 {
                // Nothing published yet: the dispatcher is only starting.
                s.pid = std::process::id();
            }
            ControlResponse {
                ok: true,
                message: format!("{} replica(s)", s.replicas.len()),
                status: Some(s),
            }
        }
        req => {
            let (tx, rx) = oneshot::channel();
            if requests.send((req, tx)).is_err() {
                return refuse("agentsup is shutting down");
            }
            rx.await
                .unwrap_or_else(|_| refuse("agentsup is shutting down; the request was dropped"))
        }
    }
}
