//! The spawner thread: one long-lived thread starts every worker and fork
//! template, because `PR_SET_PDEATHSIG` fires when the *thread* that forked
//! exits (see the module docs of [`crate::process`]).

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;

use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::start::{registered, start};
use super::{ChildSetup, SpawnError, SpawnSpec, kill_group, kill_pid};
use crate::reaper::{ExitWaiter, ReaperHandle};

/// A started process.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// Its pid; with [`SpawnSpec::own_group`] also its process group id.
    pub pid: u32,
    /// Its stdout, when [`SpawnSpec::capture`] was set. Non-blocking, registered
    /// with the runtime that awaited [`Spawner::spawn`].
    pub stdout: Option<pipe::Receiver>,
    /// Its stderr, when [`SpawnSpec::capture`] was set.
    pub stderr: Option<pipe::Receiver>,
    /// Resolves when the reaper has collected it.
    pub exit: ExitWaiter,
}

/// What the spawner thread hands back; pipes become async on the caller's runtime.
struct RawSpawned {
    pid: u32,
    group: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    exit: ExitWaiter,
}

impl RawSpawned {
    fn into_spawned(self) -> Result<Spawned, SpawnError> {
        let to_async = |fd: Option<OwnedFd>| fd.map(pipe::Receiver::from_owned_fd).transpose();
        match (to_async(self.stdout), to_async(self.stderr)) {
            (Ok(stdout), Ok(stderr)) => Ok(Spawned {
                pid: self.pid,
                stdout,
                stderr,
                exit: self.exit,
            }),
            (Err(source), _) | (_, Err(source)) => {
                abandon(self.pid, self.group);
                Err(SpawnError::Io {
                    what: "registering a worker's output pipe",
                    source,
                })
            }
        }
    }
}

/// Kills a process that was just started but that nobody can supervise.
pub(super) fn abandon(pid: u32, group: bool) {
    let _ = if group {
        kill_group(pid, libc::SIGKILL)
    } else {
        kill_pid(pid, libc::SIGKILL)
    };
}

struct Request {
    spec: SpawnSpec,
    reaper: ReaperHandle,
    reply: oneshot::Sender<Result<RawSpawned, SpawnError>>,
}

/// The process-wide spawner thread's queue. Kept here forever, so the thread never
/// sees its channel close and never exits (which would SIGKILL every worker).
static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);

/// A handle to the spawner thread, which forks every worker (see the module docs on
/// why one long-lived thread). Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
    reaper: ReaperHandle,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl Spawner {
    /// Starts the spawner thread, or reuses the one already running; children are
    /// registered with `reaper`. The thread lives until the process exits.
    pub fn start(reaper: ReaperHandle) -> io::Result<Spawner> {
        let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        let requests = match &*slot {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<Request>();
                thread::Builder::new()
                    .name("agentsup-spawner".into())
                    .spawn(move || spawner_thread(&rx))?;
                *slot = Some(tx.clone());
                tx
            }
        };
        Ok(Spawner { requests, reaper })
    }

    /// Starts `spec` on the spawner thread and returns it registered with the
    /// reaper. If this future is dropped before the reply arrives, the new process
    /// is killed instead of being left unsupervised.
    pub(crate) async fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request {
                spec,
                reaper: self.reaper.clone(),
                reply,
            })
            .map_err(|_| SpawnError::SpawnerGone)?;
        let raw = rx.await.map_err(|_| SpawnError::SpawnerGone)??;
        raw.into_spawned()
    }
}

fn spawner_thread(requests: &mpsc::Receiver<Request>) {
    let setup = ChildSetup {
        pdeathsig: true,
        take_terminal: false,
        stdout_socket: false,
        ignore: &[],
    };
    for req in requests {
        let result =
            start(&req.spec, setup, registered(&req.reaper)).map(|(started, exit)| RawSpawned {
                pid: started.pid,
                group: req.spec.own_group,
                stdout: started.stdout,
                stderr: started.stderr,
                exit,
            });
        // The caller stopped waiting (its future was dropped).
        if let Err(Ok(orphaned)) = req.reply.send(result) {
            abandon(orphaned.pid, orphaned.group);
        }
    }
}
