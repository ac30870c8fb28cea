//! The one owner of `waitpid` in a supervising process (SPEC 5, crates.md §6).
//!
//! Every exit status in `agentsup run` is collected here and nowhere else: a second
//! `waitpid(-1)` anywhere in the process (tokio's child reaper, `Command::status`, a
//! helper crate) would steal statuses from this one, and this one would steal theirs.
//! The reaper therefore also makes agentsup a child subreaper, so orphans of workers
//! are reparented to it and reaped here, counted, and logged at debug.
//!
//! # Design
//!
//! * One process-wide reaper on a dedicated thread ([`Reaper::start`] returns a
//!   handle to it, starting it on first use). It is a singleton because `waitpid(-1)`
//!   is process-wide by nature, and it owns its thread (with a small current-thread
//!   tokio runtime for `tokio::signal::unix`) so it outlives whichever runtime or
//!   test first asked for it.
//! * It drains `waitpid(-1, WNOHANG)` until nothing is left on every SIGCHLD,
//!   because SIGCHLDs coalesce: ten children exiting together may raise one signal.
//! * No periodic poll: the SIGCHLD listener is registered before the first drain,
//!   and tokio records a signal that arrives while we drain, so a child that exits
//!   after the last `waitpid` of a pass always wakes the next pass. Nothing is lost
//!   between "drain said StillAlive" and "await the next signal".
//!
//! # The registration race, and how it is closed
//!
//! A child can exit before its pid is registered. Here the table lock is the same
//! lock the reaper holds around each `waitpid(-1)` and the lookup that follows, and
//! spawners hold it across `fork`+`exec` and the insert (`ReaperHandle::lock`,
//! `Registrar::register`). So the reaper cannot see a child's exit before that
//! child is in the table. This also keeps std's own exec-failure path sound: when
//! `exec` fails, `Command::spawn` calls `waitpid(pid)` itself and panics on
//! `ECHILD`; holding the lock means we never reap that child first.
//!
//! The other option — parking unknown statuses for a while so a late `register` can
//! claim them — was rejected: a parked orphan's pid can be reused by a new child,
//! which would then be handed the orphan's status. Fork mode (SPEC 6), whose replicas
//! are not our direct children, would need that option or a report from the template.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgid};
use tokio::sync::oneshot;

use crate::sys::wait::{self, Target};

// One type for "how a process ended" across the crate: classification (auth.rs)
// defines it, the reaper produces it; it is imported from `auth`, never re-exported.
use crate::auth::Termination;

/// The status a shell reports for `t`: the exit status, or 128+N for signal N. This
/// is what `agentsup exec` exits with (SPEC 1).
pub(crate) fn shell_exit_code(t: Termination) -> i32 {
    match t {
        Termination::Exited(code) => code,
        Termination::Signaled(sig) => 128 + sig,
    }
}

/// The exit status of a registered child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// How it ended.
    pub termination: Termination,
}

/// Why an [`ExitWaiter`] resolved without a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WaitError {
    /// The pid was not an unreaped child when it was registered: it was never ours,
    /// or it had already been reaped (as an orphan, or by someone else).
    #[error("pid {0} is not an unreaped child of this process")]
    NotAChild(u32),
    /// The reaper thread stopped before the child exited. It does not stop while the
    /// process runs, so this means it panicked.
    #[error("the reaper stopped before pid {0} exited")]
    ReaperStopped(u32),
}

/// A future that resolves once the reaper has collected the exit status of one pid.
///
/// Dropping it is fine: the child is still reaped, and its status is discarded.
#[derive(Debug)]
pub(crate) struct ExitWaiter {
    pid: u32,
    state: WaiterState,
}

#[derive(Debug)]
enum WaiterState {
    Pending(oneshot::Receiver<ExitStatus>),
    Failed(WaitError),
}

impl ExitWaiter {
    /// Returns the status if the child has been reaped, without waiting. For
    /// blocking callers such as [`crate::process::run_capture`].
    pub(crate) fn try_wait(&mut self) -> Option<Result<ExitStatus, WaitError>> {
        match &mut self.state {
            WaiterState::Failed(e) => Some(Err(e.clone())),
            WaiterState::Pending(rx) => match rx.try_recv() {
                Ok(status) => Some(Ok(status)),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Some(Err(WaitError::ReaperStopped(self.pid)))
                }
            },
        }
    }
}

impl Future for ExitWaiter {
    type Output = Result<ExitStatus, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            WaiterState::Failed(e) => Poll::Ready(Err(e.clone())),
            WaiterState::Pending(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.map_err(|_| WaitError::ReaperStopped(this.pid))),
        }
    }
}

/// A registered child: where its status goes, and whether it leads its own
/// process group (a worker), whose remaining members are killed when it exits.
struct Entry {
    tx: oneshot::Sender<ExitStatus>,
    leads_group: bool,
}

type Table = HashMap<u32, Entry>;

#[derive(Default)]
struct Shared {
    /// Registered pids. Held around every `waitpid(-1)` by the reaper, and across
    /// `spawn` + insert by spawners (see the module docs).
    table: Mutex<Table>,
    orphans: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the map itself consistent (every
        // operation on it is a single insert or remove), so poisoning is ignored
        // rather than spreading the panic to every later spawn.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Namespace for starting the process-wide reaper; see the module docs.
#[derive(Debug)]
pub enum Reaper {}

/// The process-wide reaper, once started. A `Mutex` rather than a `OnceLock` so a
/// failed start can be retried and reported instead of cached.
static RUNNING: Mutex<Option<ReaperHandle>> = Mutex::new(None);

impl Reaper {
    /// Makes this process a child subreaper and starts the reaper thread, or returns
    /// a handle to the one already running. Does not need a tokio runtime.
    ///
    /// When this returns, SIGCHLD is being listened to, so any child spawned
    /// afterwards is covered; children that already exited are reaped (as orphans)
    /// on the first pass.
    pub fn start() -> io::Result<ReaperHandle> {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = &*running {
            return Ok(handle.clone());
        }
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("agentsup-reaper".into())
            .spawn(move || reaper_thread(&thread_shared, &ready_tx))?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the reaper thread died while starting"))??;
        let handle = ReaperHandle { shared };
        *running = Some(handle.clone());
        Ok(handle)
    }

    /// The running reaper, if [`Reaper::start`] has been called in this process.
    /// Code that would otherwise wait on its own child must go through it then.
    pub(crate) fn current() -> Option<ReaperHandle> {
        RUNNING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn reaper_thread(shared: &Shared, ready: &std::sync::mpsc::SyncSender<io::Result<()>>) {
    use tokio::signal::unix::{SignalKind, signal};

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async {
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        loop {
            drain(shared);
            if sigchld.recv().await.is_none() {
                break;
            }
        }
        tracing::error!("the SIGCHLD stream ended; no more children will be reaped");
    });
    // Dropping the senders resolves every pending waiter with ReaperStopped instead
    // of leaving it hanging.
    shared.lock().clear();
}

/// Reaps until no child is waitable. Runs on the reaper thread only.
///
/// Each exit is first peeked at without reaping (`WNOWAIT`): while the child is a
/// zombie its pid, and so its process group id, cannot be reused, so a registered
/// group leader's group can be SIGKILLed safely before the leader is reaped. That is
/// how nothing a worker started outlives it (SPEC 5): `sh -c "sleep 300 & exit 3"`
/// leaves no `sleep` behind, in agentsup's lifetime or, through the guard, after.
fn drain(shared: &Shared) {
    loop {
        let mut table = shared.lock();
        let pid = match peek_any(false) {
            Ok(Some(pid)) => pid,
            Ok(None) => return,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitid failed; retrying on the next SIGCHLD");
                return;
            }
        };
        if table.get(&pid).is_some_and(|e| e.leads_group) {
            if let Ok(raw) = to_pid(pid) {
                // The group of our own unreaped child; ESRCH (the group held only
                // the leader) is fine.
                let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        let termination = match reap_pid(pid, false) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(pid, error = %e, "waitpid failed; retrying on the next SIGCHLD");
                return;
            }
        };
        let waiter = table.remove(&pid);
        drop(table);
        match waiter {
            Some(entry) => {
                // The receiver may be gone (nobody cares about this child any more).
                let _ = entry.tx.send(ExitStatus { termination });
            }
            None => {
                shared.orphans.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pid, %termination, "reaped an orphan");
            }
        }
    }
}

/// A cheap, cloneable handle to the process-wide reaper.
#[derive(Clone)]
pub struct ReaperHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ReaperHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaperHandle")
            .field("orphans_reaped", &self.orphans_reaped())
            .finish_non_exhaustive()
    }
}

impl ReaperHandle {
    /// Locks the pid table so a child can be spawned and registered atomically:
    /// hold the returned [`Registrar`] across `Command::spawn` and
    /// [`Registrar::register`]. The reaper is paused meanwhile, so keep it short.
    pub(crate) fn lock(&self) -> Registrar<'_> {
        Registrar {
            table: self.shared.lock(),
        }
    }

    /// Registers `pid` and returns a future for its exit status.
    ///
    /// Only race-free when `pid` cannot have exited yet (for example a stopped
    /// child); otherwise spawn under [`ReaperHandle::lock`]. If the pid was already
    /// reaped, the waiter says [`WaitError::NotAChild`] rather than hanging.
    #[cfg(test)]
    pub(crate) fn register(&self, pid: u32) -> ExitWaiter {
        self.lock().register(pid)
    }

    /// How many unregistered processes (orphans reparented to us) were reaped.
    pub(crate) fn orphans_reaped(&self) -> u64 {
        self.shared.orphans.load(Ordering::Relaxed)
    }
}

/// The locked pid table; see [`ReaperHandle::lock`].
pub(crate) struct Registrar<'a> {
    table: MutexGuard<'a, Table>,
}

impl fmt::Debug for Registrar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("registered", &self.table.len())
            .finish()
    }
}

impl Registrar<'_> {
    /// Registers a child spawned while this lock was held.
    pub(crate) fn register(&mut self, pid: u32) -> ExitWaiter {
        if !is_unreaped_child(pid) {
            return ExitWaiter {
                pid,
                state: WaiterState::Failed(WaitError::NotAChild(pid)),
            };
        }
        let (tx, rx) = oneshot::channel();
        // Registered after a successful exec, so a child started in its own group
        // has already called setpgid.
        let leads_group = to_pid(pid).is_ok_and(|raw| {
            let raw = Pid::from_raw(raw);
            getpgid(Some(raw)) == Ok(raw)
        });
        // A pid stays ours until we reap it, so an existing entry can only be a
        // stale one whose waiter was never resolved; replacing it is right.
        self.table.insert(pid, Entry { tx, leads_group });
        ExitWaiter {
            pid,
            state: WaiterState::Pending(rx),
        }
    }
}

/// Decodes a raw `waitpid` status into exited/signaled; `None` for stop/continue
/// reports, which we never ask for.
fn decode(status: libc::c_int) -> Option<Termination> {
    if libc::WIFEXITED(status) {
        Some(Termination::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Termination::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// `waitpid(pid)` for one child: for code that owns the only wait in its process
/// (`agentsup check`'s secret commands, `agentsup exec`).
pub(crate) fn reap_pid(pid: u32, block: bool) -> io::Result<Option<Termination>> {
    let raw = to_pid(pid)?;
    loop {
        match wait::waitpid(raw, block) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
            Ok(None) => return Ok(None),
            Ok(Some(status)) => {
                if let Some(t) = decode(status) {
                    return Ok(Some(t));
                }
            }
        }
    }
}

/// Blocks until some child is waitable and returns its pid *without* reaping it
/// (`waitid(P_ALL, WEXITED | WNOWAIT)`). A zombie keeps its pid and process group
/// reserved, so a caller can still signal the group safely before reaping.
pub(crate) fn peek_any_blocking() -> io::Result<u32> {
    loop {
        match wait::peek_exited(Target::Any, true) {
            Ok(Some(pid)) => return Ok(pid),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The pid of a child that has exited, without reaping it; `Ok(None)` when none has
/// (and `block` is false).
fn peek_any(block: bool) -> io::Result<Option<u32>> {
    wait::peek_exited(Target::Any, block)
}

/// True while `pid` is our child and not yet reaped (running or zombie): a
/// `WNOWAIT` peek at it succeeds, and never consumes a status.
fn is_unreaped_child(pid: u32) -> bool {
    let Ok(raw) = to_pid(pid) else {
        return false;
    };
    loop {
        match wait::peek_exited(Target::Pid(raw), false) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Converts a pid to `pid_t`, refusing 0 and values that would be negative: in
/// `kill`/`waitpid` those mean "my group" or "everyone", never one process.
pub(crate) fn to_pid(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(raw) if raw > 0 => Ok(raw),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{pid} is not a valid process id"),
        )),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Running a test in its own process.
    //!
    //! The reaper makes the process a subreaper and reaps *every* child, so a test
    //! that starts it would steal children from tests running beside it in the same
    //! test binary. Such tests re-run themselves in a fresh copy of the binary.

    use std::path::Path;
    use std::time::Duration;

    const MARKER: &str = "AGENTSUP_ISOLATED_TEST";

    /// Runs `body` in a child test process that runs only the test `path`
    /// (`concat!(module_path!(), "::name")`), and fails if that process fails.
    pub(crate) fn isolated(path: &str, body: impl FnOnce()) {
        let name = path.strip_prefix("agentsup::").unwrap_or(path);
        if std::env::var(MARKER).as_deref() == Ok(name) {
            body();
            return;
        }
        let exe = std::env::current_exe().expect("test binary path");
        let argv: Vec<String> = vec![
            exe.to_string_lossy().into_owned(),
            name.to_owned(),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ];
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.push((MARKER.into(), name.into()));
        let out = crate::process::run_capture(
            &argv,
            &env,
            Path::new("/"),
            Duration::from_secs(120),
            None,
        )
        .expect("run isolated test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status == super::Termination::Exited(0) && stdout.contains("1 passed"),
            "isolated test {name} {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
    }

    /// Blocks on `f` in a fresh multi-threaded runtime.
    pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{block_on, isolated};
    use super::*;
    use crate::process::{SpawnSpec, Spawner};
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> SpawnSpec {
        SpawnSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            stdin_null: true,
            capture: false,
            own_group: true,
            reset_signals: vec![],
            creds: None,
        }
    }

    #[test]
    fn shell_exit_codes() {
        assert_eq!(shell_exit_code(Termination::Exited(3)), 3);
        assert_eq!(shell_exit_code(Termination::Signaled(9)), 137);
    }

    #[test]
    fn to_pid_refuses_group_and_broadcast_values() {
        assert!(to_pid(0).is_err());
        assert!(to_pid(u32::MAX).is_err());
        assert_eq!(to_pid(42).unwrap(), 42);
    }

    #[test]
    fn two_hundred_concurrent_children_get_their_own_status() {
        isolated(
            concat!(
                module_path!(),
                "::two_hundred_concurrent_children_get_their_own_status"
            ),
            || {
                block_on(async {
                    let reaper = Reaper::start().unwrap();
                    let spawner = Spawner::start(reaper.clone()).unwrap();
                    let mut tasks = Vec::new();
                    for i in 0..200u32 {
                        let spawner = spawner.clone();
                        tasks.push(tokio::spawn(async move {
                            // Even ones exit with a code, odd ones kill themselves.
                            let (script, want) = if i % 2 == 0 {
                                (
                                    format!("exit {}", i % 100),
                                    Termination::Exited((i % 100) as i32),
                                )
                            } else {
                                let sig =
                                    [libc::SIGTERM, libc::SIGKILL, libc::SIGUSR1][i as usize % 3];
                                (format!("kill -{sig} $$"), Termination::Signaled(sig))
                            };
                            let spawned = spawner.spawn(sh(&script)).await.unwrap();
                            let got = spawned.exit.await.unwrap().termination;
                            (i, got, want)
                        }));
                    }
                    for task in tasks {
                        let (i, got, want) = task.await.unwrap();
                        assert_eq!(got, want, "child {i}");
                    }
                    assert_eq!(reaper.orphans_reaped(), 0);
                });
            },
        );
    }

    #[test]
    fn a_group_leader_s_exit_kills_its_group() {
        isolated(
            concat!(module_path!(), "::a_group_leader_s_exit_kills_its_group"),
            || {
                block_on(async {
                    let reaper = Reaper::start().unwrap();
                    let spawner = Spawner::start(reaper.clone()).unwrap();
                    let dir = tempfile::tempdir().unwrap();
                    let file = dir.path().join("pid");
                    let worker = spawner
                        .spawn(sh(&format!(
                            "sleep 300 >/dev/null 2>&1 & echo $! > {}; exit 3",
                            file.display()
                        )))
                        .await
                        .unwrap();
                    let status = worker.exit.await.unwrap();
                    assert_eq!(status.termination, Termination::Exited(3));
                    let pid: i32 = std::fs::read_to_string(&file)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    // Gone once reaped: killed before the leader was reaped.
                    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        assert!(Instant::now() < deadline, "the sleep outlived its leader");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            },
        );
    }

    #[test]
    fn orphans_are_reaped_and_counted_not_delivered() {
        isolated(
            concat!(
                module_path!(),
                "::orphans_are_reaped_and_counted_not_delivered"
            ),
            || {
                block_on(async {
                    let reaper = Reaper::start().unwrap();
                    let spawner = Spawner::start(reaper.clone()).unwrap();
                    let before = reaper.orphans_reaped();
                    // The child left the worker's group, so it outlives the worker, is
                    // reparented to us (we are a subreaper) and exits 3 later.
                    let worker = spawner
                        .spawn(sh("setsid sh -c 'sleep 0.2; exit 3' & exit 0"))
                        .await
                        .unwrap();
                    let status = worker.exit.await.unwrap();
                    assert_eq!(status.termination, Termination::Exited(0));
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while reaper.orphans_reaped() == before {
                        assert!(Instant::now() < deadline, "orphan never reaped");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    assert_eq!(reaper.orphans_reaped(), before + 1);
                });
            },
        );
    }

    #[test]
    fn registering_a_stranger_fails_instead_of_hanging() {
        isolated(
            concat!(
                module_path!(),
                "::registering_a_stranger_fails_instead_of_hanging"
            ),
            || {
                block_on(async {
                    let reaper = Reaper::start().unwrap();
                    // Pid 1 is never our child.
                    let waiter = reaper.register(1);
                    assert_eq!(waiter.await, Err(WaitError::NotAChild(1)));
                });
            },
        );
    }

    #[test]
    fn start_is_idempotent() {
        isolated(concat!(module_path!(), "::start_is_idempotent"), || {
            let a = Reaper::start().unwrap();
            let b = Reaper::start().unwrap();
            assert!(Arc::ptr_eq(&a.shared, &b.shared));
            assert!(Reaper::current().is_some());
        });
    }
}
