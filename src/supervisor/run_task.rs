//! One run of one replica: spawn it, pump its output, wait for its exit, and report
//! back to the dispatcher. One tokio task per run, no threads.
//!
//! The exit is reported only after the output pipes reached EOF, so the tail that
//! classifies the exit (SPEC 5) holds everything the worker printed. A grandchild
//! that keeps the pipes open after the worker died would block that forever, so
//! after [`LEAK_TIMEOUT`] the worker's process group is SIGKILLed (the leader is
//! dead but still unreaped, so its group id cannot have been reused) and the pumps
//! get one more grace period before they are abandoned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

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
            spec,
            worker,
            replica,
            tail,
        } = req;
        let spawned = match spawner.spawn(spec).await {
            Ok(s) => s,
            Err(e) => {
                let _ = events.send(RunEvent::SpawnFailed {
                    slot,
                    run,
                    reason: e.to_string(),
                });
                return;
            }
        };
        let pid = spawned.pid;
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
        let termination = match spawned.exit.await {
            Ok(status) => status.termination,
            // The reaper cannot lose a registered child; if it did, report a crash
            // rather than hang the replica forever.
            Err(_) => Termination::Signaled(libc::SIGKILL),
        };
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
        let _ = events.send(RunEvent::Exited {
            slot,
            run,
            termination,
            leaked,
        });
    });
}

/// Awaits every pump still running; finished ones are skipped on a second call.
async fn futures_join(pumps: &mut [tokio::task::JoinHandle<std::io::Result<()>>]) {
    for p in pumps.iter_mut() {
        if !p.is_finished() {
            let _ = p.await;
        }
    }
}
