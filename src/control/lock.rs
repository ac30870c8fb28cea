//! The single-run lock: what keeps two `agentsup run` of one config apart, before
//! any socket is probed or bound.
//!
//! A lock is an exclusive `flock` on a file named after the config, and a run
//! takes it at **every** usable place, never at a place another user controls:
//!
//! 1. in each socket directory that is usable by the socket's own rules
//!    (`path::check`): `$XDG_RUNTIME_DIR/agentsup/`, `/run/user/<uid>/agentsup/`,
//!    `/tmp/agentsup-<uid>/` (created `0700`; skipped when it exists and is not a
//!    directory of ours, which is what another user squatting it looks like);
//! 2. beside the config (`.<stem>.agentsup.lock`, when the config's directory is
//!    ours and no other user can write it): created only when `/tmp/agentsup-<uid>`
//!    cannot be used, and otherwise locked only if its file exists, so that a run
//!    that had to fall back there still meets every later run;
//! 3. when `/tmp/agentsup-<uid>` could not be used, it is looked at again after
//!    step 2 and locked if it has become usable meanwhile (its squatter removed
//!    it), which closes the race between step 2 of one run and step 1 of another.
//!
//! Two runs of one config exclude each other when they share one place. The
//! environment-independent places (`/run/user/<uid>`, `/tmp/agentsup-<uid>`, the
//! config's directory) are the same for every run of one uid, so they do, whatever
//! `XDG_RUNTIME_DIR` says, unless none of those three is usable: then only two runs
//! with the same `XDG_RUNTIME_DIR` meet (a run without it has no place at all and
//! refuses to start).
//!
//! A lock file is removed by its holder, before it lets go of the lock. Whoever
//! opened the file just before that locks an unlinked file while a third run
//! creates a fresh one, so after locking every taker checks that the path still
//! names the file it locked (`dev`, `ino`), and starts over if not.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::path::{self, Candidate, Place};

/// One lock file we hold. Dropping it removes the file if it still is the one we
/// locked, then releases the lock.
pub(crate) struct Held {
    path: PathBuf,
    lock: Flock<File>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(m) = self.lock.metadata() {
            if file_id(&self.path) == Some((m.dev(), m.ino())) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Held {
    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The locks a run holds, removed when dropped.
pub(crate) struct Locks {
    held: Vec<Held>,
    /// What was found at a place that could not be used, for one warning line.
    pub(crate) warning: Option<String>,
}

impl Locks {
    /// The lock files held, in the order they were taken.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.held.iter().map(Held::path)
    }
}

/// Why no lock could be taken.
pub(crate) enum Refused {
    /// Another run holds the lock at this path.
    Busy(PathBuf),
    /// No place is usable, or one failed in a way that is not "held".
    Failed(String),
}

/// What one attempt at one lock file gave.
enum Attempt {
    Held(Flock<File>),
    Busy,
    /// `create` was false and there is no file.
    Absent,
}

/// Takes the single-run lock of `canonical` at every usable place (see the module
/// docs).
pub(crate) fn take(
    canonical: &Path,
    runtime_dir: Option<&std::ffi::OsStr>,
    uid: u32,
) -> Result<Locks, Refused> {
    let places = path::every_place(canonical, runtime_dir, uid);
    let mut locks = Locks {
        held: Vec::new(),
        warning: None,
    };
    let mut skipped = Vec::new();
    let mut tmp_unusable: Option<&Candidate> = None;
    for c in places.iter().filter(|c| c.place != Place::BesideConfig) {
        match path::check(c, uid, true) {
            Ok(()) => locks.add(&path::lock_file(c), true)?,
            Err(why) => {
                if c.place == Place::Tmp {
                    tmp_unusable = Some(c);
                    if std::fs::symlink_metadata(&c.dir).is_ok() {
                        locks.warning = Some(why.clone());
                    }
                }
                skipped.push(why);
            }
        }
    }
    if let Some(c) = places.iter().find(|c| c.place == Place::BesideConfig) {
        match path::check(c, uid, true) {
            Ok(()) => locks.add(&path::lock_file(c), tmp_unusable.is_some())?,
            Err(why) => skipped.push(why),
        }
    }
    if let Some(c) = tmp_unusable {
        if path::check(c, uid, true).is_ok() {
            locks.add(&path::lock_file(c), true)?;
            locks.warning = None;
        }
    }
    let places: Vec<String> = locks.paths().map(|p| p.display().to_string()).collect();
    if let Some(w) = &mut locks.warning {
        *w = format!(
            "{w}: another user may be squatting it; not used (the single-run lock is {} instead)",
            places.join(" and ")
        );
    }
    if locks.held.is_empty() {
        return Err(Refused::Failed(format!(
            "no usable place for the single-run lock of {}: {}\n  hint: set XDG_RUNTIME_DIR to a directory only you can write, or keep the config in a directory only you can write{}",
            canonical.display(),
            skipped.join("; "),
            tmp_unusable
                .filter(|_| locks.warning.is_some())
                .map(|c| format!(", or have {} removed (it is not yours)", c.dir.display()))
                .unwrap_or_default()
        )));
    }
    Ok(locks)
}

impl Locks {
    /// Takes the lock at `path` (creating the file when `create`); a lock held by
    /// another run refuses the start.
    fn add(&mut self, path: &Path, create: bool) -> Result<(), Refused> {
        if self.paths().any(|p| p == path) {
            return Ok(());
        }
        match attempt(path, create).map_err(Refused::Failed)? {
            Attempt::Held(lock) => {
                self.held.push(Held {
                    path: path.to_path_buf(),
                    lock,
                });
                Ok(())
            }
            Attempt::Busy => Err(Refused::Busy(path.to_path_buf())),
            Attempt::Absent => Ok(()),
        }
    }
}

/// Locks `path`; with `create`, makes it first if needed, and writes our pid in it.
fn attempt(path: &Path, create: bool) -> Result<Attempt, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot take the lock {}: {e}", path.display());
    for _ in 0..20 {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            // std opens with O_CLOEXEC: a worker must never inherit the lock.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if !create && e.kind() == ErrorKind::NotFound => return Ok(Attempt::Absent),
            Err(e) => return Err(fail(&e)),
        };
        let meta = file.metadata().map_err(|e| fail(&e))?;
        if !meta.is_file() || meta.uid() != path::euid() {
            // Only possible in a directory that others could write once: not ours.
            return Err(fail(&format!(
                "it is not a regular file of uid {} (uid {}); remove it",
                path::euid(),
                meta.uid()
            )));
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                // Removed (and maybe re-created) by its last holder between our
                // open and our lock: the file we hold is no lock any more.
                if file_id(path) != Some((meta.dev(), meta.ino())) {
                    continue;
                }
                locked.set_len(0).map_err(|e| fail(&e))?;
                writeln!(locked, "{}", std::process::id()).map_err(|e| fail(&e))?;
                return Ok(Attempt::Held(locked));
            }
            Err((_, Errno::EWOULDBLOCK)) => return Ok(Attempt::Busy),
            Err((_, e)) => return Err(fail(&e)),
        }
    }
    Err(fail(&"it keeps being replaced"))
}

pub(crate) fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Most lock files one start looks at in one directory.
const SWEEP_MAX: usize = 4096;

/// Lock files of other configs in `dir`, ours, for [`take_stale`]: those nobody
/// holds were left by runs that were killed (SIGKILL, a crash, a power cut), which
/// cannot remove their own.
pub(crate) fn others_in(dir: &Path, ours: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let uid = path::euid();
    entries
        .take(SWEEP_MAX)
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.uid() == uid))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lock") && !ours.contains(p))
        .collect()
}

/// Locks `path` if nobody holds it: the caller removes the stale socket of that
/// config, if any, then drops it, which removes the file. `None` when a live run
/// holds it, or it is gone.
pub(crate) fn take_stale(path: &Path) -> Option<Held> {
    match attempt(path, false) {
        Ok(Attempt::Held(lock)) => Some(Held {
            path: path.to_path_buf(),
            lock,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs that take and release the lock of one config as fast as they can, each
    /// removing its file on the way out: never two holders at once. Without the
    /// `(dev, ino)` check after locking, a taker that opened the file just before
    /// its holder removed it locks the unlinked file while another creates and
    /// locks a fresh one.
    #[test]
    fn takers_racing_with_removal_never_hold_the_lock_together() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("race.toml");
        std::fs::write(&config, "").unwrap();
        let canonical = path::canonical_config(&config);
        let holders = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (canonical, holders, taken) =
                    (canonical.clone(), holders.clone(), taken.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        match take(&canonical, None, path::euid()) {
                            Ok(locks) => {
                                let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                                assert_eq!(now, 1, "two holders of one lock");
                                taken.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                holders.fetch_sub(1, Ordering::SeqCst);
                                drop(locks);
                            }
                            Err(Refused::Busy(_)) => {}
                            Err(Refused::Failed(e)) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(taken.load(Ordering::SeqCst) > 0);
        // Every holder removed its file on the way out.
        let c = path::every_place(&canonical, None, path::euid());
        let tmp = c.iter().find(|c| c.place == Place::Tmp).unwrap();
        assert!(!path::lock_file(tmp).exists());
    }
}
