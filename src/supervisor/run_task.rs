//! One run of one replica: spawn it, pump its output, wait for its exit, and report
//! back to the dispatcher. One tokio task per run, no threads.
//!
//! The exit is reported only after the output pipes reached EOF, so the tail that
//! classifies the exit (SPEC 5) holds everything the worker printed, however slowly
//! agentsup's own stdout is read.
//!
//! When the leader exits, the reaper SIGKILLs what is left of its process group
//! before reaping it (fork-mode replicas: here, once the template reports the
//! exit), so nothing the worker started outlives it, and the group stays listed
//! with the guard until it is empty. The pipes are then drained to EOF. Only a
//! process that left the group (`setsid`) can still hold them open: after
//! [`LEAK_TIMEOUT`] spent *waiting to read* (time blocked on a slow consumer of
//! agentsup's stdout does not count) the group is killed again and after one more
//! such period the pumps are abandoned.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::auth::Termination;
use crate::fork::{ForkTemplate, Forked};
use crate::output::{LineMeta, OutputSink, ReadWait, Stream, Tail, pump_tracked};
use crate::process::{SpawnSpec, Spawner, kill_group};
use crate::redact::SharedRedactor;

/// How long pumps may wait to read after the worker and its group are gone.
pub(super) const LEAK_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often the drain checks on its pumps.
const DRAIN_TICK: Duration = Duration::from_millis(50);
/// How long a killed group may take to empty (its members reaped) before the run
/// is reported anyway, with the group left listed with the guard.
const GROUP_EMPTY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run reports to the dispatcher.
#[derive(Debug)]
pub(super) enum RunEvent {
    /// The process started.
    Spawned {
        /// Replica slot.
        slot: usize,
        /// Run number of that slot.
        run: u64,
        /// Its pid (and process group).
        pid: u32,
    },
    /// It could not be started.
    SpawnFailed {
        /// Replica slot.
        slot: usize,
        /// Run number.
        run: u64,
        /// Why, without values.
        reason: String,
    },
    /// It exited and its output is drained.
    Exited {
        /// Replica slot.
        slot: usize,
        /// Run number.
        run: u64,
        /// How it ended.
        termination: Termination,
        /// True when grandchildren held its output open and were killed.
        leaked: bool,
    },
}

/// Everything one run needs.
pub(super) struct RunRequest {
    /// Replica slot.
    pub slot: usize,
    /// Run number.
    pub run: u64,
    /// What to start.
    pub spec: SpawnSpec,
    /// Worker name, for the output prefix.
    pub worker: Arc<str>,
    /// Replica index.
    pub replica: u32,
    /// Output tails (stdout, stderr), shared with the dispatcher for classification.
    pub tail: [Arc<Mutex<Tail>>; 2],
    /// Fork mode (SPEC 6): the worker's template. The replica is forked from it
    /// with `spec.env` (argv and cwd come from the template) instead of spawned.
    pub fork: Option<ForkTemplate>,
}

/// Starts one run in the background.
pub(super) fn start(
    req: RunRequest,
    spawner: Spawner,
    sink: OutputSink,
    redactor: SharedRedactor,
    events: mpsc::UnboundedSender<RunEvent>,
) {
    tokio::spawn(async move {
        let RunRequest {
            slot,
            run,
            mut spec,
            worker,
            replica,
            tail,
            fork,
        } = req;
        let started = match fork {
            Some(template) => template
                .fork(std::mem::take(&mut spec.env))
                .await
                .map(Started::forked)
                .map_err(|e| with_hint(&e)),
            None => spawner
                .spawn(spec)
                .await
                .map(Started::spawned)
                .map_err(|e| with_hint(&e)),
        };
        let spawned = match started {
            Ok(s) => s,
            Err(reason) => {
                let _ = events.send(RunEvent::SpawnFailed { slot, run, reason });
                return;
            }
        };
        let pid = spawned.pid;
        // Spawned and forked replicas both lead their own process group.
        crate::guard::watch(pid);
        let _ = events.send(RunEvent::Spawned { slot, run, pid });
        let mut pumps = Vec::new();
        let mut waits = Vec::new();
        let [tail_out, tail_err] = tail;
        for (reader, stream, tail) in [
            (spawned.stdout, Stream::Stdout, tail_out),
            (spawned.stderr, Stream::Stderr, tail_err),
        ] {
            let Some(reader) = reader else { continue };
            let meta = LineMeta {
                worker: worker.clone(),
                replica,
                pid,
                stream,
            };
            let wait = Arc::new(ReadWait::default());
            waits.push(Arc::clone(&wait));
            pumps.push(tokio::spawn(pump_tracked(
                reader,
                meta,
                sink.clone(),
                redactor.clone(),
                tail,
                wait,
            )));
        }
        // Unknown when the reaper lost a registered child (it cannot) or a fork
        // template died before reporting: a crash, rather than a replica that hangs.
        let termination = spawned
            .exit
            .await
            .unwrap_or(Termination::Signaled(libc::SIGKILL));
        // Spawned workers: the reaper already killed the group. Fork-mode replicas
        // are reaped by their template: kill what is left here (a group with a
        // member keeps its id, so this cannot hit another group).
        if group_alive(pid) {
            let _ = kill_group(pid, libc::SIGKILL);
        }
        let leaked = drain(&mut pumps, &waits, pid).await;
        wait_group_empty(pid).await;
        let _ = events.send(RunEvent::Exited {
            slot,
            run,
            termination,
            leaked,
        });
    });
}

/// Waits for every pump to reach EOF. Returns true when processes outside the
/// worker's group held its output open (see the module docs).
async fn drain(
    pumps: &mut [tokio::task::JoinHandle<std::io::Result<()>>],
    waits: &[Arc<ReadWait>],
    pid: u32,
) -> bool {
    let mut idle = Duration::ZERO;
    let mut leaked = false;
    loop {
        if tokio::time::timeout(DRAIN_TICK, futures_join(pumps))
            .await
            .is_ok()
        {
            return leaked;
        }
        let reading = pumps
            .iter()
            .zip(waits)
            .any(|(p, w)| !p.is_finished() && w.waiting());
        if !reading {
            continue; // busy, or blocked on a slow consumer: not the worker's fault
        }
        idle += DRAIN_TICK;
        if idle < LEAK_TIMEOUT {
            continue;
        }
        if leaked {
            for p in pumps.iter() {
                p.abort();
            }
            return true;
        }
        leaked = true;
        idle = Duration::ZERO;
        let _ = kill_group(pid, libc::SIGKILL);
    }
}

/// True while process group `pgid` has a member (zombies included).
fn group_alive(pgid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // Signal "0" (None) only checks that the group exists.
    raw > 1 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

/// Keeps the group listed with the guard until it is empty, so a SIGKILL of
/// agentsup meanwhile still takes its members along; then unlists it.
async fn wait_group_empty(pgid: u32) {
    let start = tokio::time::Instant::now();
    while group_alive(pgid) {
        if start.elapsed() > GROUP_EMPTY_TIMEOUT {
            tracing::warn!(
                pgid,
                "process group {pgid} still has members {}s after its worker exited (stuck in the kernel?); it stays listed for the final sweep",
                GROUP_EMPTY_TIMEOUT.as_secs()
            );
            return;
        }
        let _ = kill_group(pgid, libc::SIGKILL);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::guard::unwatch(pgid);
}

/// A started replica, spawned or forked: the same pipes, and an exit future that
/// yields `None` when the status is unknown.
struct Started {
    pid: u32,
    stdout: Option<tokio::net::unix::pipe::Receiver>,
    stderr: Option<tokio::net::unix::pipe::Receiver>,
    exit: Pin<Box<dyn Future<Output = Option<Termination>> + Send>>,
}

impl Started {
    fn spawned(s: crate::process::Spawned) -> Started {
        let exit = s.exit;
        Started {
            pid: s.pid,
            stdout: s.stdout,
            stderr: s.stderr,
            exit: Box::pin(async move { exit.await.ok().map(|s| s.termination) }),
        }
    }

    fn forked(f: Forked) -> Started {
        let exit = f.exit;
        Started {
            pid: f.pid,
            stdout: f.stdout,
            stderr: f.stderr,
            exit: Box::pin(async move { exit.await.ok().map(|s| s.termination) }),
        }
    }
}

/// The error's text, plus the exhausted resource and its limit when that is why
/// (out of file descriptors, processes, memory).
fn with_hint(e: &(dyn std::error::Error + 'static)) -> String {
    crate::limits::explain_spawn(e)
}

/// Awaits every pump still running; finished ones are skipped on a second call.
async fn futures_join(pumps: &mut [tokio::task::JoinHandle<std::io::Result<()>>]) {
    for p in pumps.iter_mut() {
        if !p.is_finished() {
            let _ = p.await;
        }
    }
}
