//! Unit tests of `watch` (kept apart: the module itself stays readable).

use super::*;
use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode,
};
use std::cell::Cell;
use std::collections::VecDeque;
use std::os::unix::fs::symlink;
use std::rc::Rc;

fn ev(kind: EventKind, paths: &[&str]) -> Event {
    let mut e = Event::new(kind);
    for p in paths {
        e = e.add_path(PathBuf::from(p));
    }
    e
}

fn srcs(paths: &[&str]) -> Vec<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

const WRITE: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));
const ATTR: EventKind = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
const CREATE: EventKind = EventKind::Create(CreateKind::File);
const REMOVE: EventKind = EventKind::Remove(RemoveKind::Any);
const RENAME_TO: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::To));
const RENAME_FROM: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::From));
const RENAME_BOTH: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
const OPEN: EventKind = EventKind::Access(AccessKind::Open(AccessMode::Any));
const CLOSE: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Write));

#[test]
fn file_source_counts_only_its_own_name() {
    let s = srcs(&["/app/.env"]);
    for (what, e, want) in [
        ("written", ev(WRITE, &["/app/.env"]), true),
        ("created", ev(CREATE, &["/app/.env"]), true),
        ("removed", ev(REMOVE, &["/app/.env"]), true),
        ("chmod", ev(ATTR, &["/app/.env"]), true),
        ("rename over", ev(RENAME_TO, &["/app/.env"]), true),
        (
            "rename pair",
            ev(RENAME_BOTH, &["/app/.env.tmp", "/app/.env"]),
            true,
        ),
        ("renamed away", ev(RENAME_FROM, &["/app/.env"]), true),
        ("temp file written", ev(WRITE, &["/app/.env.tmp"]), false),
        ("temp file created", ev(CREATE, &["/app/.env.tmp"]), false),
        ("sibling", ev(WRITE, &["/app/app.log"]), false),
        ("sibling created", ev(CREATE, &["/app/other"]), false),
        ("prefix-named sibling", ev(WRITE, &["/app/.envrc"]), false),
        ("opened by our re-read", ev(OPEN, &["/app/.env"]), false),
        ("closed", ev(CLOSE, &["/app/.env"]), false),
        ("k8s swap next to it", ev(RENAME_TO, &["/app/..data"]), true),
        ("parent dir mtime (poller)", ev(ATTR, &["/app"]), false),
        ("parent dir removed", ev(REMOVE, &["/app"]), true),
        ("parent dir moved", ev(RENAME_FROM, &["/app"]), true),
        ("elsewhere", ev(WRITE, &["/other/.env"]), false),
    ] {
        assert_eq!(is_relevant(&s, &e), want, "{what}");
    }
}

#[test]
fn dir_source_counts_every_entry_including_the_kubelet_swap() {
    let s = srcs(&["/run/secrets"]);
    for (what, e, want) in [
        (
            "key written",
            ev(WRITE, &["/run/secrets/OPENAI_API_KEY"]),
            true,
        ),
        (
            "new timestamped dir",
            ev(CREATE, &["/run/secrets/..2026_01_01_00_00_00.2"]),
            true,
        ),
        (
            "..data_tmp link",
            ev(CREATE, &["/run/secrets/..data_tmp"]),
            true,
        ),
        (
            "swap",
            ev(
                RENAME_BOTH,
                &["/run/secrets/..data_tmp", "/run/secrets/..data"],
            ),
            true,
        ),
        (
            "old dir removed",
            ev(REMOVE, &["/run/secrets/..2026_01_01_00_00_00.1"]),
            true,
        ),
        ("dir chmod", ev(ATTR, &["/run/secrets"]), true),
        ("dir deleted", ev(REMOVE, &["/run/secrets"]), true),
        (
            "opened by our re-read",
            ev(OPEN, &["/run/secrets/OPENAI_API_KEY"]),
            false,
        ),
        (
            "dir listed by our re-read",
            ev(OPEN, &["/run/secrets"]),
            false,
        ),
        (
            "sibling of the dir",
            ev(CREATE, &["/run/agentsup.pid"]),
            false,
        ),
        (
            "grandchild",
            ev(WRITE, &["/run/secrets/..data/OPENAI_API_KEY"]),
            false,
        ),
    ] {
        assert_eq!(is_relevant(&s, &e), want, "{what}");
    }
}

#[test]
fn missing_source_counts_the_directories_on_its_way() {
    let s = srcs(&["/srv/a/b/secrets"]);
    assert!(is_relevant(&s, &ev(CREATE, &["/srv/a"])));
    assert!(is_relevant(&s, &ev(RENAME_TO, &["/srv/a/b"])));
    assert!(!is_relevant(&s, &ev(CREATE, &["/srv/x"])));
    // An ancestor's mtime moving (the poller) is not a reason on its own.
    assert!(!is_relevant(&s, &ev(ATTR, &["/srv/a"])));
}

#[test]
fn overflow_counts_for_everything() {
    let s = srcs(&["/app/.env"]);
    let e = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
    assert!(is_relevant(&s, &e));
}

#[test]
fn watched_dirs_follow_what_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("secrets")).unwrap();
    std::fs::write(root.join(".env"), "A=1\n").unwrap();
    let dirs = desired_dirs(&[
        root.join(".env"),
        root.join("secrets"),
        root.join("x/y/opt"),
    ]);
    let got: Vec<&PathBuf> = dirs.keys().collect();
    // The file's dir, the dir source and its parent, and for the missing path
    // its nearest existing ancestor: all `root` or `root/secrets`.
    assert_eq!(got, vec![&root, &root.join("secrets")]);
    std::fs::create_dir_all(root.join("x/y")).unwrap();
    let dirs = desired_dirs(&[root.join("x/y/opt")]);
    assert_eq!(dirs.keys().collect::<Vec<_>>(), vec![&root.join("x/y")]);
}

/// A scripted timeline for [`debounce`]: pulses at fixed offsets from a start
/// instant, and a virtual clock (shared with the test's `on_burst`) that jumps
/// to the next pulse or to the end of a wait. The senders are gone after the
/// last pulse.
struct Timeline {
    start: Instant,
    now: Rc<Cell<Instant>>,
    pulses: VecDeque<Duration>,
}

impl Pulses for Timeline {
    fn recv(&mut self) -> bool {
        match self.pulses.pop_front() {
            Some(at) => {
                self.now.set(self.now.get().max(self.start + at));
                true
            }
            None => false,
        }
    }
    fn recv_timeout(&mut self, wait: Duration) -> Result<(), RecvTimeoutError> {
        let now = self.now.get();
        match self.pulses.front() {
            Some(&at) if self.start + at <= now + wait => {
                self.now.set(now.max(self.start + at));
                self.pulses.pop_front();
                Ok(())
            }
            Some(_) => {
                self.now.set(now + wait);
                Err(RecvTimeoutError::Timeout)
            }
            None => Err(RecvTimeoutError::Disconnected),
        }
    }
    fn now(&self) -> Instant {
        self.now.get()
    }
}

/// Runs [`debounce`] in virtual time over pulses at `pulses` ms from the start,
/// with `quiet` and `max_burst` in ms; returns the times (ms from the start) of
/// its calls. A last pulse an hour later stands for senders that stay quiet,
/// so the last burst ends by its quiet period, not by a disconnect.
fn run_debounce(pulses: &[u64], quiet: u64, max_burst: u64) -> Vec<u64> {
    let start = Instant::now();
    let now = Rc::new(Cell::new(start));
    let mut script: VecDeque<Duration> =
        pulses.iter().map(|&ms| Duration::from_millis(ms)).collect();
    let hour = Duration::from_secs(3600);
    script.push_back(hour);
    let timeline = Timeline {
        start,
        now: now.clone(),
        pulses: script,
    };
    let mut fired = Vec::new();
    debounce(
        timeline,
        Duration::from_millis(quiet),
        Duration::from_millis(max_burst),
        || {
            let at = now.get() - start;
            // The stand-in pulse an hour on is not part of the script.
            if at < hour {
                fired.push(at.as_millis() as u64);
            }
            at < hour
        },
    );
    fired
}

#[test]
fn debounce_collapses_a_burst_into_one_call_after_quiet() {
    // Ten pulses 10 ms apart (the last at 90 ms), quiet 400 ms: one call, at
    // 490 ms exactly, in virtual time.
    let pulses: Vec<u64> = (0..10).map(|i| i * 10).collect();
    assert_eq!(run_debounce(&pulses, 400, 10_000), [490]);
}

#[test]
fn debounce_separates_bursts_with_a_quiet_gap() {
    // Three pulses 400 ms apart, quiet 50 ms: three bursts.
    assert_eq!(run_debounce(&[0, 400, 800], 50, 10_000), [50, 450, 850]);
}

#[test]
fn debounce_waits_out_the_whole_quiet_period_after_each_pulse() {
    // A pulse 1 ms before the quiet period ends restarts it; one 1 ms after
    // it ended starts a new burst.
    assert_eq!(run_debounce(&[0, 99, 198], 100, 10_000), [298]);
    assert_eq!(run_debounce(&[0, 101], 100, 10_000), [100, 201]);
}

#[test]
fn debounce_reports_a_never_ending_burst_at_max_burst() {
    // Pulses every 20 ms for 1.2 s never go quiet (100 ms); max_burst 300 ms
    // reports each 300 ms of it, then the rest after quiet.
    let pulses: Vec<u64> = (0..60).map(|i| i * 20).collect();
    let fired = run_debounce(&pulses, 100, 300);
    assert_eq!(fired[..4], [300, 620, 940, 1260][..], "{fired:?}");
}

#[test]
fn debounce_ends_when_the_senders_are_gone_or_on_burst_says_so() {
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(()).unwrap();
    let mut calls = 0;
    debounce(
        &rx,
        Duration::from_millis(10),
        Duration::from_secs(1),
        || {
            calls += 1;
            false
        },
    );
    assert_eq!(calls, 1);
    drop(tx);
    // Disconnected mid-burst: no call, and it returns.
    let start = Instant::now();
    let timeline = Timeline {
        start,
        now: Rc::new(Cell::new(start)),
        pulses: [Duration::ZERO].into(),
    };
    let mut calls = 0;
    debounce(
        timeline,
        Duration::from_millis(10),
        Duration::from_secs(1),
        || {
            calls += 1;
            true
        },
    );
    assert_eq!(calls, 0);
}

/// Waits for one `()` (after `timeout`, `false`).
async fn pulse(rx: &mut mpsc::UnboundedReceiver<()>, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .ok()
        .flatten()
        .is_some()
}

fn fast(force_poll: bool) -> Tuning {
    Tuning {
        quiet: Duration::from_millis(50),
        max_burst: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        force_poll,
    }
}

const PATIENCE: Duration = Duration::from_secs(20);

/// Lays out a Kubernetes Secret volume holding `KEY=value`, version `n`.
fn k8s_version(dir: &Path, n: u32, value: &str) -> PathBuf {
    let ts = dir.join(format!("..2026_01_01_00_00_00.{n}"));
    std::fs::create_dir(&ts).unwrap();
    std::fs::write(ts.join("KEY"), value).unwrap();
    ts
}

fn k8s_swap(dir: &Path, n: u32, value: &str, old: &Path) {
    let ts = k8s_version(dir, n, value);
    symlink(ts.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(old).unwrap();
}

async fn kubelet_swap_is_one_change(force_poll: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    let v1 = k8s_version(&dir, 1, "one");
    symlink(v1.file_name().unwrap(), dir.join("..data")).unwrap();
    symlink("..data/KEY", dir.join("KEY")).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The real quiet period: a loaded machine may pause between the steps.
    let tuning = Tuning {
        quiet: QUIET,
        ..fast(force_poll)
    };
    let _guard = start_with(vec![dir.clone()], tx, tuning).unwrap();
    // Our own reads (the re-read) must not count as changes.
    for _ in 0..3 {
        let _ = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(std::fs::read_to_string(dir.join("KEY")).unwrap(), "one");
    }
    assert!(
        !pulse(&mut rx, Duration::from_millis(400)).await,
        "a read counted as a change"
    );
    k8s_swap(&dir, 2, "two", &v1);
    assert!(pulse(&mut rx, PATIENCE).await, "the swap was not seen");
    assert_eq!(std::fs::read_to_string(dir.join("KEY")).unwrap(), "two");
    // One burst, one pulse (a poller may catch the swap half-way through a
    // scan, so only inotify promises that).
    if !force_poll {
        assert!(
            !pulse(&mut rx, Duration::from_millis(600)).await,
            "one swap, two pulses"
        );
    }
}

#[tokio::test]
async fn kubelet_swap_is_one_change_with_inotify() {
    kubelet_swap_is_one_change(false).await;
}

#[tokio::test]
async fn kubelet_swap_is_one_change_when_polling() {
    kubelet_swap_is_one_change(true).await;
}

/// An inotify watcher whose every watch hits `fs.inotify.max_user_watches`.
struct FullWatcher;

impl Watcher for FullWatcher {
    fn new<F: notify::EventHandler>(_: F, _: notify::Config) -> notify::Result<Self> {
        Ok(FullWatcher)
    }
    fn watch(&mut self, p: &Path, _: RecursiveMode) -> notify::Result<()> {
        Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch).add_path(p.to_path_buf()))
    }
    fn unwatch(&mut self, _: &Path) -> notify::Result<()> {
        Ok(())
    }
    fn kind() -> notify::WatcherKind {
        notify::WatcherKind::NullWatcher
    }
}

#[test]
fn watch_limit_falls_back_to_polling() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    std::fs::write(&env, "A=1\n").unwrap();
    let (pulse_tx, pulse_rx) = std::sync::mpsc::channel();
    let sources: Arc<[PathBuf]> = vec![env.clone()].into();
    let mut armed = Armed {
        watcher: Box::new(FullWatcher),
        polling: false,
        sources: sources.clone(),
        dirs: BTreeMap::new(),
        handler: Handler {
            sources,
            pulse: pulse_tx,
        },
        tuning: fast(false),
    };
    armed.arm().unwrap();
    assert!(armed.polling);
    assert_eq!(armed.dirs.keys().collect::<Vec<_>>(), vec![tmp.path()]);
    // Same size, most likely the same mtime second: only the content differs.
    std::fs::write(&env, "A=2\n").unwrap();
    assert!(
        pulse_rx.recv_timeout(PATIENCE).is_ok(),
        "the poller missed the change"
    );
}

#[tokio::test]
async fn dotenv_rename_over_counts_and_siblings_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join(".env");
    std::fs::write(&env, "A=1\n").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _guard = start_with(vec![env.clone()], tx, fast(false)).unwrap();
    std::fs::write(tmp.path().join("unrelated.log"), "x").unwrap();
    assert!(
        !pulse(&mut rx, Duration::from_millis(400)).await,
        "a sibling counted"
    );
    std::fs::write(tmp.path().join(".env.tmp"), "A=2\n").unwrap();
    std::fs::rename(tmp.path().join(".env.tmp"), &env).unwrap();
    assert!(
        pulse(&mut rx, PATIENCE).await,
        "the rename over .env was not seen"
    );
    // In-place writes count too.
    std::fs::write(&env, "A=3\n").unwrap();
    assert!(
        pulse(&mut rx, PATIENCE).await,
        "an in-place write was not seen"
    );
}

#[tokio::test]
async fn missing_dir_is_watched_once_it_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnt/secrets");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _guard = start_with(vec![dir.clone()], tx, fast(false)).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    // Creating the directories is itself a change (the source appeared); the
    // watches move down with it, possibly over more than one burst.
    assert!(
        pulse(&mut rx, PATIENCE).await,
        "the directory appearing was not seen"
    );
    while pulse(&mut rx, Duration::from_millis(300)).await {}
    std::fs::write(dir.join("KEY"), "v").unwrap();
    assert!(
        pulse(&mut rx, PATIENCE).await,
        "a key written into the new dir was not seen"
    );
    // Removed and recreated: the new directory is watched again.
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(pulse(&mut rx, PATIENCE).await, "the removal was not seen");
    std::fs::create_dir(&dir).unwrap();
    assert!(
        pulse(&mut rx, PATIENCE).await,
        "the re-creation was not seen"
    );
    while pulse(&mut rx, Duration::from_millis(300)).await {}
    std::fs::write(dir.join("KEY"), "w").unwrap();
    assert!(
        pulse(&mut rx, PATIENCE).await,
        "a key in the recreated dir was not seen"
    );
}

#[tokio::test]
async fn dropping_the_guard_ends_the_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let guard = start_with(vec![tmp.path().to_path_buf()], tx, fast(false)).unwrap();
    drop(guard);
    // The debounce thread holds the only sender; it ends once the watcher is gone.
    assert!(
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap()
            .is_none(),
        "the watch outlived its guard"
    );
}
