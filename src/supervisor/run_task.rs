//! One run of one replica: spawn it, pump its output, wait for its exit, and report
//! back to the dispatcher. One tokio task per run, no threads.
//!
//! The exit is reported only after the output pipes reached EOF, so the tail that
//! classifies the exit (SPEC 5) holds everything the worker printed. A grandchild
//! that keeps the pipes open after the worker died would block that forever, so
//! after [`LEAK_TIMEOUT`] the worker's process group is SIGKILLed (the leader is
//! dead but still unreaped, so its group id cannot have been reused) and the pumps
//! get one more grace period before they are abandoned.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::fork::{ForkTemplate, Forked};
use crate::output::{LineMeta, OutputSink, Stream, Tail, pump};
use crate::reaper::Termination;
use crate::redact::SharedRedactor;
use crate::spawn::{SpawnSpec, Spawner, kill_group};

/// How long pipes may stay open after the worker itself exited.
pub const LEAK_TIMEOUT: Duration = Duration::from_millis(1500);

/// What a run reports to the dispatcher.
#[derive(Debug)]
pub enum RunEvent {
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
pub struct RunRequest {
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
    /// Output tail, shared with the dispatcher for classification.
    pub tail: Arc<Mutex<Tail>>,
    /// Fork mode (SPEC 6): the worker's template. The replica is forked from it
    /// with `spec.env` (argv and cwd come from the template) instead of spawned.
    pub fork: Option<ForkTemplate>,
}

/// Starts one run in the background.
pub fn start(
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
                .map_err(|e| e.to_string()),
            None => spawner
                .spawn(spec)
                .await
                .map(Started::spawned)
                .map_err(|e| e.to_string()),
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
        for (reader, stream) in [
            (spawned.stdout, Stream::Stdout),
            (spawned.stderr, Stream::Stderr),
        ] {
            let Some(reader) = reader else { continue };
            let meta = LineMeta {
                worker: worker.clone(),
                replica,
                pid,
                stream,
            };
            pumps.push(tokio::spawn(pump(
                reader,
                meta,
                sink.clone(),
                redactor.clone(),
                tail.clone(),
            )));
        }
        // Unknown when the reaper lost a registered child (it cannot) or a fork
        // template died before reporting: a crash, rather than a replica that hangs.
        let termination = spawned
            .exit
            .await
            .unwrap_or(Termination::Signaled(libc::SIGKILL));
        let mut leaked = false;
        let drain = futures_join(&mut pumps);
        if tokio::time::timeout(LEAK_TIMEOUT, drain).await.is_err() {
            leaked = true;
            let _ = kill_group(pid, libc::SIGKILL);
            if tokio::time::timeout(LEAK_TIMEOUT, futures_join(&mut pumps))
                .await
                .is_err()
            {
                for p in &pumps {
                    p.abort();
                }
            }
        }
        // The group is gone: its leader was reaped and the pipes drained (or the
        // group was killed for holding them).
        crate::guard::unwatch(pid);
        let _ = events.send(RunEvent::Exited {
            slot,
            run,
            termination,
            leaked,
        });
    });
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
    fn spawned(s: crate::spawn::Spawned) -> Started {
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

/// Awaits every pump still running; finished ones are skipped on a second call.
async fn futures_join(pumps: &mut [tokio::task::JoinHandle<std::io::Result<()>>]) {
    for p in pumps.iter_mut() {
        if !p.is_finished() {
            let _ = p.await;
        }
    }
}
