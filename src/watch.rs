//! Watching file and `dir` sources for changes (SPEC 5).
//!
//! A watched source that changes makes the supervisor re-read and re-check every
//! source; auth-blocked replicas whose keys changed restart at once, and running
//! replicas whose environment changed restart one at a time.
//!
//! # What is watched, and why
//!
//! Nothing here watches a file's inode. Kubernetes Secret and ConfigMap volumes
//! update by writing a new hidden `..YYYY_MM_DD_…` directory and renaming a
//! `..data_tmp` symlink over `..data`; the visible `KEY -> ..data/KEY` links never
//! change, and a watch on one of them (or on what it points to) sees only
//! `IN_DELETE_SELF` and then goes dead. Editors and deploy tools likewise replace
//! files by renaming a temporary file over them. So:
//!
//! - a **file** source (dotenv) is watched through its parent directory; only
//!   events naming that file, or a `..data` swap next to it, count. A rename over
//!   the file shows up as a `To` event naming it;
//! - a **directory** source is watched itself, non-recursively, and any event in it
//!   counts (the `..data` swap is a create/rename/delete of `..data`, `..data_tmp`
//!   and `..YYYY…` entries). Its parent is watched too, so the directory itself
//!   being removed, replaced or (as a symlink) repointed is also noticed;
//! - a path that does not exist yet (an optional source) is watched through its
//!   nearest existing ancestor; once the missing directories appear, the watches
//!   move down to where they belong.
//!
//! Events are only hints ("maybe changed"): the supervisor re-reads and compares
//! the values, so a spurious event costs one re-read and restarts nothing. Access
//! events (open/close) are ignored, though, because the re-read itself opens the
//! files, and counting those would make every re-read trigger the next one.
//!
//! # Debounce
//!
//! notify calls back on its own thread. The callback only filters events and
//! pulses a channel; one `agentsup-watch` thread collapses a burst of pulses into
//! one `()` sent [`QUIET`] after the last event (at most [`MAX_BURST`] after the
//! first, so a file rewritten in a loop cannot postpone the re-read forever),
//! after re-arming the watches for directories that appeared, vanished or were
//! replaced. Re-arming comes first so that a change after it raises a new event,
//! while anything before it is seen by the re-read that the `()` triggers.
//!
//! # inotify limits
//!
//! If inotify cannot be initialised (`fs.inotify.max_user_instances`, often low in
//! containers) or a watch cannot be added (`fs.inotify.max_user_watches`), the
//! watcher falls back to [`notify::PollWatcher`] every [`POLL_INTERVAL`], comparing
//! contents as well as modification times (mtimes have one-second resolution
//! there, and a quick rewrite would otherwise go unseen), and says so.
//!
//! # Limits
//!
//! A file source that is itself a symlink is watched through the link's directory:
//! the link being replaced (including a `..data` swap) is seen, but an in-place edit
//! of the file it points to in some other directory is not. Such changes are still
//! picked up on the next auth failure or SIGHUP.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use notify::event::ModifyKind;
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A burst of events ends once no event has arrived for this long (crates.md §7:
/// the kubelet's swap is several operations in a few milliseconds).
pub(crate) const QUIET: Duration = Duration::from_millis(200);

/// A burst that never goes quiet is reported this long after it began anyway.
pub(crate) const MAX_BURST: Duration = Duration::from_secs(1);

/// How often the polling fallback scans the watched directories. Sources are a
/// handful of small files, so a few seconds is cheap and still prompt.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Keeps the watcher alive; dropping it stops watching (the notify threads and the
/// debounce thread wind down on their own).
pub(crate) struct WatchGuard {
    _armed: Arc<Mutex<Armed>>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchGuard")
    }
}

/// Watches `paths` (dotenv files and `dir` sources, existing or not) and sends `()`
/// on `tx` once per debounced burst of changes. Relative paths are taken against
/// the current directory.
///
/// Fails only if no watcher at all (neither inotify nor polling) can be started.
pub(crate) fn start(
    paths: Vec<PathBuf>,
    tx: mpsc::UnboundedSender<()>,
) -> Result<WatchGuard, String> {
    start_with(paths, tx, Tuning::default())
}

/// Timings and backend choice; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    quiet: Duration,
    max_burst: Duration,
    poll_interval: Duration,
    /// Skip inotify, as if it could not be initialised.
    force_poll: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            quiet: QUIET,
            max_burst: MAX_BURST,
            poll_interval: POLL_INTERVAL,
            force_poll: false,
        }
    }
}

fn start_with(
    paths: Vec<PathBuf>,
    tx: mpsc::UnboundedSender<()>,
    tuning: Tuning,
) -> Result<WatchGuard, String> {
    // notify reports `watched dir + entry name`; absolute paths make those
    // comparable with the sources whatever the current directory.
    let sources: Arc<[PathBuf]> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let (pulse_tx, pulse_rx) = std::sync::mpsc::channel();
    let handler = Handler {
        sources: sources.clone(),
        pulse: pulse_tx,
    };
    let (watcher, polling) = if tuning.force_poll {
        (poll_watcher(&handler, tuning)?, true)
    } else {
        // Named, not `RecommendedWatcher`: agentsup is Linux-only, and with
        // `default-features = false` notify has no recommended watcher on macOS.
        match notify::INotifyWatcher::new(handler.clone(), notify::Config::default()) {
            Ok(w) => (Box::new(w) as Box<dyn Watcher + Send>, false),
            Err(e) => {
                warn_polling(&format!("inotify cannot be initialised ({e})"), tuning);
                (poll_watcher(&handler, tuning)?, true)
            }
        }
    };
    let mut armed = Armed {
        watcher,
        polling,
        sources,
        dirs: BTreeMap::new(),
        handler,
        tuning,
    };
    armed.arm()?;
    tracing::debug!(
        "watching {} for source changes ({})",
        armed
            .dirs
            .keys()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if armed.polling { "polling" } else { "inotify" }
    );
    let armed = Arc::new(Mutex::new(armed));
    // Weak: the guard alone keeps the watcher alive, so dropping it disconnects
    // the pulse channel and ends this thread.
    let weak: Weak<Mutex<Armed>> = Arc::downgrade(&armed);
    std::thread::Builder::new()
        .name("agentsup-watch".into())
        .spawn(move || {
            debounce(&pulse_rx, tuning.quiet, tuning.max_burst, || {
                let Some(armed) = weak.upgrade() else {
                    return false;
                };
                let result = lock(&armed).arm();
                drop(armed);
                if let Err(e) = result {
                    tracing::warn!("source watch: {e}");
                }
                tx.send(()).is_ok()
            });
        })
        .map_err(|e| format!("cannot start the watch thread: {e}"))?;
    Ok(WatchGuard { _armed: armed })
}

fn lock(m: &Mutex<Armed>) -> std::sync::MutexGuard<'_, Armed> {
    // A panic while re-arming leaves the map of watches merely stale, and the next
    // re-arm corrects it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn warn_polling(why: &str, tuning: Tuning) {
    tracing::warn!(
        "{why}; polling the sources every {} instead (raise /proc/sys/fs/inotify/max_user_instances or max_user_watches for instant updates)",
        humantime::format_duration(tuning.poll_interval)
    );
}

fn poll_watcher(handler: &Handler, tuning: Tuning) -> Result<Box<dyn Watcher + Send>, String> {
    let config = notify::Config::default()
        .with_poll_interval(tuning.poll_interval)
        .with_compare_contents(true);
    notify::PollWatcher::new(handler.clone(), config)
        .map(|w| Box::new(w) as Box<dyn Watcher + Send>)
        .map_err(|e| format!("cannot start a polling watcher: {e}"))
}

/// notify's callback: runs on notify's thread, so it only filters and pulses.
#[derive(Clone)]
struct Handler {
    sources: Arc<[PathBuf]>,
    pulse: Sender<()>,
}

impl notify::EventHandler for Handler {
    fn handle_event(&mut self, event: notify::Result<Event>) {
        match event {
            Ok(ev) => {
                if is_relevant(&self.sources, &ev) {
                    // The debounce thread may be gone at shutdown; nothing to do then.
                    let _ = self.pulse.send(());
                }
            }
            // Lost events (queue overflow) arrive as a Rescan event, not as an error;
            // errors are unreadable entries seen by the poller, which the re-read
            // reports properly if they matter.
            Err(e) => tracing::debug!("source watch: {e}"),
        }
    }
}

/// Device and inode of a watched directory: a different pair under the same path
/// means the directory was replaced and the watch must be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId(u64, u64);

impl DirId {
    fn of(m: &std::fs::Metadata) -> DirId {
        DirId(m.dev(), m.ino())
    }
}

/// The watcher and what it currently watches.
struct Armed {
    watcher: Box<dyn Watcher + Send>,
    polling: bool,
    sources: Arc<[PathBuf]>,
    /// Directories handed to the watcher (including ones it refused, so a refusal
    /// is reported once, not after every burst).
    dirs: BTreeMap<PathBuf, DirId>,
    handler: Handler,
    tuning: Tuning,
}

impl Armed {
    /// Makes the watched directories match [`desired_dirs`]. Repeats until stable,
    /// because a directory can appear or vanish between looking and watching.
    fn arm(&mut self) -> Result<(), String> {
        for _ in 0..8 {
            let desired = desired_dirs(&self.sources);
            if desired == self.dirs {
                return Ok(());
            }
            let stale: Vec<PathBuf> = self
                .dirs
                .iter()
                .filter(|(d, id)| desired.get(*d) != Some(id))
                .map(|(d, _)| d.clone())
                .collect();
            for d in stale {
                // Fails when inotify already dropped the watch (IN_DELETE_SELF) or
                // never had it; either way it is gone now.
                let _ = self.watcher.unwatch(&d);
                self.dirs.remove(&d);
            }
            for (d, id) in desired {
                if self.dirs.contains_key(&d) {
                    continue;
                }
                match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.dirs.insert(d, id);
                    }
                    Err(e)
                        if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) && !self.polling =>
                    {
                        self.fall_back_to_polling(&format!(
                            "the inotify watch limit is reached ({e})"
                        ))?;
                        break;
                    }
                    // Vanished since we looked: the next round watches an ancestor.
                    Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                    Err(e) => {
                        tracing::warn!(
                            "cannot watch {} for source changes ({e}); changes there are picked up on auth failures and SIGHUP only",
                            d.display()
                        );
                        self.dirs.insert(d, id);
                    }
                }
            }
        }
        Ok(())
    }

    fn fall_back_to_polling(&mut self, why: &str) -> Result<(), String> {
        warn_polling(why, self.tuning);
        // Replacing the inotify watcher drops it and all its watches.
        self.watcher = poll_watcher(&self.handler, self.tuning)?;
        self.polling = true;
        self.dirs.clear();
        Ok(())
    }
}

/// The directories to watch for `sources`, with their identity now.
fn desired_dirs(sources: &[PathBuf]) -> BTreeMap<PathBuf, DirId> {
    let mut out = BTreeMap::new();
    for s in sources {
        // Follows symlinks: a dir source may be a link to the real directory.
        if let Ok(m) = std::fs::metadata(s) {
            if m.is_dir() {
                out.insert(s.clone(), DirId::of(&m));
            }
        }
        // A file's directory; a directory's parent (the directory itself being
        // replaced); or, for a missing path, the nearest existing ancestor.
        if let Some((d, id)) = s.parent().and_then(nearest_existing_dir) {
            out.insert(d, id);
        }
    }
    out
}

fn nearest_existing_dir(start: &Path) -> Option<(PathBuf, DirId)> {
    let mut cur = Some(start);
    while let Some(d) = cur {
        if let Ok(m) = std::fs::metadata(d) {
            if m.is_dir() {
                return Some((d.to_path_buf(), DirId::of(&m)));
            }
        }
        cur = d.parent();
    }
    None
}

/// Whether `ev` may mean one of `sources` changed (or must be re-armed).
fn is_relevant(sources: &[PathBuf], ev: &Event) -> bool {
    if ev.need_rescan() {
        // The kernel queue overflowed: anything may have changed.
        return true;
    }
    let structural = match ev.kind {
        // The re-read itself opens and closes the files: never a change.
        EventKind::Access(_) => return false,
        // Content or metadata of an entry. For a watched ancestor or a file's
        // directory this is noise (the poller reports every directory whose mtime
        // moved), so it counts only for the source itself and a dir source's entries.
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_)) => false,
        _ => true,
    };
    if ev.paths.is_empty() {
        return true;
    }
    ev.paths
        .iter()
        .any(|p| sources.iter().any(|s| touches(s, p, structural)))
}

/// Whether an event on `p` concerns `source`.
fn touches(source: &Path, p: &Path, structural: bool) -> bool {
    // The file itself (written, created, renamed over, removed), or a dir source's
    // own entry in its parent, or a dir source's self events.
    if p == source {
        return true;
    }
    let parent = p.parent();
    // Any entry of a dir source, the kubelet's `..data` swap included.
    if parent == Some(source) {
        return true;
    }
    // A file in a Kubernetes ConfigMap/Secret volume (`.env -> ..data/.env`): the
    // swap renames `..data`, and the link named like the file never changes.
    if parent.is_some() && parent == source.parent() && p.file_name() == Some(OsStr::new("..data"))
    {
        return true;
    }
    // A directory on the way to the source appeared, vanished or was renamed: the
    // watches move, and the source may have appeared or vanished with it.
    structural && source.starts_with(p)
}

/// What [`debounce`] waits on: pulses, and the clock it measures bursts with.
/// The watch thread uses a channel and the real clock; the unit tests a scripted
/// timeline, so they run in virtual time with no sleep and no scheduling race.
trait Pulses {
    /// Blocks until a pulse; `false` once every sender is gone.
    fn recv(&mut self) -> bool;
    /// Waits at most `wait` for a pulse.
    fn recv_timeout(&mut self, wait: Duration) -> Result<(), RecvTimeoutError>;
    fn now(&self) -> Instant;
}

impl Pulses for &Receiver<()> {
    fn recv(&mut self) -> bool {
        Receiver::recv(self).is_ok()
    }
    fn recv_timeout(&mut self, wait: Duration) -> Result<(), RecvTimeoutError> {
        Receiver::recv_timeout(self, wait)
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Collapses bursts of pulses into one call of `on_burst`, made once `quiet` has
/// passed without a pulse, or `max_burst` after the burst began if pulses never
/// stop. Returns when every pulse sender is gone or `on_burst` returns false.
fn debounce(
    mut rx: impl Pulses,
    quiet: Duration,
    max_burst: Duration,
    mut on_burst: impl FnMut() -> bool,
) {
    // Blocks between bursts: no polling, no timer while nothing happens.
    while rx.recv() {
        let deadline = rx.now() + max_burst;
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(rx.now()));
            if wait.is_zero() {
                break;
            }
            match rx.recv_timeout(wait) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break,
                // The watcher is gone: agentsup is shutting down.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if !on_burst() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
