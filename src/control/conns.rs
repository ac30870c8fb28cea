//! The control socket's open connections, so that idle ones cannot starve the
//! operator (issue 13): 32 connections that never send a request used to hold every
//! slot for 60 s each.
//!
//! - A connection must send its first request within [`FIRST_REQUEST`], and later
//!   ones within [`IDLE`] of the previous answer.
//! - At most [`MAX_CONNECTIONS`] are served; when a new one comes and all slots are
//!   taken, the one idle the longest (waiting for a request, never one being
//!   answered, and for at least half a second) is closed to make room. Only when every slot is answering a request
//!   (`reload` waits for a re-read) does the newcomer wait for one to finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// A new connection silent this long is closed.
pub(super) const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// A connection idle for less than this is not closed to make room: its request
/// may be on its way.
const GRACE: Duration = Duration::from_millis(500);
/// A connection idle this long after an answer is closed.
pub(super) const IDLE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Table {
    next: u64,
    /// By id: since when the connection waits for a request (`None`: answering
    /// one), and how to close it.
    open: HashMap<u64, (Option<Instant>, Option<AbortHandle>)>,
}

/// The open connections, shared by the accept loop and the connection tasks.
#[derive(Clone, Default)]
pub(super) struct Conns {
    table: Arc<Mutex<Table>>,
    /// A slot freed or a connection went idle: the accept loop may make room.
    changed: Arc<Notify>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for one more connection: returns at once while a slot is free,
    /// closes the longest-idle connection when none is, and otherwise waits until
    /// one is.
    pub(super) async fn make_room(&self) {
        loop {
            let changed = self.changed.notified();
            let wait = {
                let mut t = self.lock();
                if t.open.len() < MAX_CONNECTIONS {
                    return;
                }
                let oldest = t
                    .open
                    .iter()
                    .filter_map(|(id, (idle, _))| idle.map(|since| (since, *id)))
                    .min();
                match oldest {
                    // Idle long enough not to be a client whose request is on its
                    // way (50 `agentsup reload` at once are all answered).
                    Some((since, id)) if since.elapsed() >= GRACE => {
                        if let Some((_, Some(abort))) = t.open.remove(&id) {
                            abort.abort();
                        }
                        tracing::debug!("control socket: full; closed the connection idle longest");
                        return;
                    }
                    Some((since, _)) => Some(GRACE.saturating_sub(since.elapsed())),
                    None => None,
                }
            };
            match wait {
                Some(d) => {
                    let _ = tokio::time::timeout(d, changed).await;
                }
                None => changed.await,
            }
        }
    }

    /// How to close connection `id` from outside (the task serving it). A
    /// connection that ended already is not there any more: nothing to do.
    pub(super) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(entry) = self.lock().open.get_mut(&id) {
            entry.1 = Some(abort);
        }
    }

    /// Registers a new connection, idle from now; the returned [`Slot`] frees it
    /// when dropped (also when the task is aborted).
    pub(super) fn open(&self) -> Slot {
        let mut t = self.lock();
        t.next += 1;
        let id = t.next;
        t.open.insert(id, (Some(Instant::now()), None));
        Slot {
            id,
            conns: self.clone(),
        }
    }
}

/// One registered connection.
pub(super) struct Slot {
    id: u64,
    conns: Conns,
}

impl Slot {
    /// Its id, for [`Conns::set_abort`].
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// It waits for a request: it may be closed to make room.
    pub(super) fn idle(&self) {
        if let Some(entry) = self.conns.lock().open.get_mut(&self.id) {
            entry.0 = Some(Instant::now());
        }
        self.conns.changed.notify_one();
    }

    /// It is answering a request: it is not closed to make room.
    pub(super) fn busy(&self) {
        if let Some(entry) = self.conns.lock().open.get_mut(&self.id) {
            entry.0 = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
        self.conns.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_table_closes_the_longest_idle_and_waits_when_all_are_busy() {
        let conns = Conns::default();
        let mut slots = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            conns.make_room().await;
            let slot = conns.open();
            let task = tokio::spawn(std::future::pending::<()>());
            conns.set_abort(slot.id(), task.abort_handle());
            slots.push(slot);
            tasks.push(task);
        }
        // Every one idle: the first opened is closed to make room (once it has
        // been idle for the grace period).
        conns.make_room().await;
        assert_eq!(conns.lock().open.len(), MAX_CONNECTIONS - 1);
        assert!(tasks.remove(0).await.unwrap_err().is_cancelled());
        let newcomer = conns.open();
        // Every one busy: the next newcomer waits until a slot is freed.
        newcomer.busy();
        for s in &slots[1..] {
            s.busy();
        }
        let waiting = tokio::spawn({
            let conns = conns.clone();
            async move { conns.make_room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "made room among busy connections");
        drop(slots.pop());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a freed slot lets it in")
            .unwrap();
    }
}
