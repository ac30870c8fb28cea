//! Key files for `on_rotation = "file"` and `"signal"` (issue 14): each declared
//! key of such a worker is also kept in `$AGENTSUP_KEYS_DIR/NAME`, replaced
//! atomically when it rotates, so a worker that reads it per request (the Python
//! and Node helpers' `key()`) picks up a new key without a restart.
//!
//! Where: one private directory per `agentsup run`, on a tmpfs when one is found
//! (`$XDG_RUNTIME_DIR`, else `/dev/shm`), so a key never reaches a disk:
//!
//! ```text
//! <base>/agentsup-keys-<random>/     0700 (0711 when a worker runs as another user)
//!     .lock                          flock held by agentsup while it runs
//!     <worker>/                      0700, owned by the worker's user
//!         OPENAI_API_KEY             0400, owned by the worker's user
//! ```
//!
//! A replaced file is written whole under a temporary name and renamed over the
//! old one, so a reader sees either the old value or the new one, never a part.
//!
//! The files never outlive agentsup: the directory is removed when `run` ends
//! (and by [`Drop`] on a panic), its path is given to the guard (which removes it
//! if agentsup is killed; see [`crate::guard`]), and every `run` first removes
//! the directories of runs that are gone (their `.lock` is free), should both have
//! been killed at once.
//!
//! What this changes in the threat model: a worker of the same uid as another
//! could already read that one's environment in `/proc`; it can read its key
//! files too. Workers separated by `user` cannot: each directory and file belongs
//! to its worker's user alone.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, fchown};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::plan::WorkerPlan;
use crate::secret::Sensitive;

/// The prefix of every run's directory, which the sweep of stale ones looks for.
const PREFIX: &str = "agentsup-keys-";

/// One run's key directory.
pub(crate) struct KeysDir {
    root: PathBuf,
    /// Held for the run's lifetime: a later run's sweep leaves this one alone.
    _lock: Flock<File>,
    /// Per worker index: `None` when the worker keeps no files.
    workers: Vec<Option<WorkerKeys>>,
    removed: bool,
}

struct WorkerKeys {
    dir: PathBuf,
    /// `(uid, gid)` the directory and files belong to, when not agentsup's own.
    owner: Option<(u32, u32)>,
    /// What each file holds now.
    written: BTreeMap<String, Sensitive>,
}

impl std::fmt::Debug for KeysDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysDir").field("root", &self.root).finish()
    }
}

impl KeysDir {
    /// Creates this run's directory when a worker in `workers` keeps key files,
    /// after removing stale ones. `Ok(None)` when none does. The warning, if any,
    /// is for the log (the base is not a tmpfs).
    pub(crate) fn create(
        workers: &[WorkerPlan],
    ) -> Result<Option<(KeysDir, Option<String>)>, String> {
        if !workers.iter().any(|w| w.on_rotation.writes_files()) {
            return Ok(None);
        }
        let foreign = workers
            .iter()
            .filter(|w| w.on_rotation.writes_files())
            .any(|w| {
                w.creds
                    .as_ref()
                    .is_some_and(|c| c.uid != nix::unistd::geteuid().as_raw())
            });
        let base = choose_base(
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            foreign,
        );
        sweep_stale(&base);
        KeysDir::create_in(&base, workers, foreign).map(|k| {
            let warning = (!is_tmpfs(&base)).then(|| {
                format!(
                    "key files for on_rotation = \"file\"/\"signal\" are kept in {}, which is not a tmpfs: they may reach a disk (set XDG_RUNTIME_DIR to a tmpfs, or mount /dev/shm)",
                    base.display()
                )
            });
            Some((k, warning))
        })
    }

    /// [`KeysDir::create`] under `base` (tests pick their own).
    pub(crate) fn create_in(
        base: &Path,
        workers: &[WorkerPlan],
        foreign: bool,
    ) -> Result<KeysDir, String> {
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            format!(
                "the key directory for on_rotation = \"file\"/\"signal\" could not be made ({what} {}: {e}); make {} writable, or set XDG_RUNTIME_DIR",
                p.display(),
                base.display()
            )
        };
        let mut attempt = 0;
        let root = loop {
            let candidate = base.join(format!("{PREFIX}{:016x}", fastrand::u64(..)));
            // Others may traverse (not list) only when a worker runs as another
            // user and must reach its own directory inside.
            match DirBuilder::new()
                .mode(if foreign { 0o711 } else { 0o700 })
                .create(&candidate)
            {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1;
                }
                Err(e) => return Err(fail("mkdir", &candidate, e)),
            }
        };
        // The umask may have narrowed the mode; widen it to what was asked.
        if foreign {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711));
        }
        let lock_path = root.join(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| fail("creating", &lock_path, e))
            .and_then(|f| {
                Flock::lock(f, FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| fail("locking", &lock_path, e.into()))
            });
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let mut out = KeysDir {
            root,
            _lock: lock,
            workers: Vec::new(),
            removed: false,
        };
        for w in workers {
            if !w.on_rotation.writes_files() {
                out.workers.push(None);
                continue;
            }
            let dir = out.root.join(&w.name);
            DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| fail("mkdir", &dir, e))?;
            let owner = w.creds.as_ref().map(|c| (c.uid, c.gid));
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                    .map_err(|e| fail("chown", &dir, e))?;
            }
            out.workers.push(Some(WorkerKeys {
                dir,
                owner,
                written: BTreeMap::new(),
            }));
        }
        Ok(out)
    }

    /// The run's directory (for the guard, which removes it if agentsup dies).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// True when worker `worker` (plan index) keeps key files.
    pub(crate) fn keeps(&self, worker: usize) -> bool {
        self.workers.get(worker).is_some_and(Option::is_some)
    }

    /// Adds `AGENTSUP_KEYS_DIR` and one `NAME_FILE` per key file to a replica's
    /// environment pairs; a `NAME_FILE` the environment already holds is left alone.
    pub(crate) fn extend_env(&self, worker: usize, pairs: &mut Vec<(String, String)>) {
        let Some(Some(w)) = self.workers.get(worker) else {
            return;
        };
        let mut add = vec![("AGENTSUP_KEYS_DIR".to_string(), w.dir.display().to_string())];
        for name in w.written.keys() {
            let var = format!("{name}_FILE");
            if !pairs.iter().any(|(k, _)| *k == var) {
                add.push((var, w.dir.join(name).display().to_string()));
            }
        }
        pairs.retain(|(k, _)| k != "AGENTSUP_KEYS_DIR");
        pairs.extend(add);
    }

    /// Makes worker `worker`'s files hold exactly `keys` (its declared keys):
    /// changed ones are replaced atomically, removed ones deleted. Returns the
    /// names that changed (empty when nothing did, or the worker keeps no files).
    /// The error names the file, never a value.
    pub(crate) fn sync(
        &mut self,
        worker: usize,
        keys: &[(String, Sensitive)],
    ) -> Result<Vec<String>, String> {
        let Some(Some(w)) = self.workers.get_mut(worker) else {
            return Ok(Vec::new());
        };
        let mut changed = Vec::new();
        for (name, value) in keys {
            if !crate::plan::is_var_name(name) {
                continue;
            }
            if w.written.get(name) == Some(value) {
                continue;
            }
            write_atomic(&w.dir, name, value, w.owner)?;
            w.written.insert(name.clone(), value.clone());
            changed.push(name.clone());
        }
        let gone: Vec<String> = w
            .written
            .keys()
            .filter(|k| !keys.iter().any(|(n, _)| n == *k))
            .cloned()
            .collect();
        for name in gone {
            let path = w.dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove key file {}: {e}", path.display())),
            }
            w.written.remove(&name);
            changed.push(name);
        }
        Ok(changed)
    }

    /// Removes the directory and every key file (the end of `run`).
    pub(crate) fn remove(&mut self) {
        if !std::mem::replace(&mut self.removed, true) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl Drop for KeysDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Writes `value` to `dir/name` through a temporary file and a rename, readable
/// only by the owner (0400), owned by `owner` when given.
fn write_atomic(
    dir: &Path,
    name: &str,
    value: &Sensitive,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.{:08x}.tmp", fastrand::u32(..)));
    let path = dir.join(name);
    let fail = |what: &str, e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot {what} key file {}: {e}", path.display())
    };
    // 0400 from creation: no moment when the file is readable by anyone else.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| fail("create a temporary file for", e))?;
    if let Some((uid, gid)) = owner {
        fchown(&f, Some(uid), Some(gid)).map_err(|e| fail("chown", e))?;
    }
    f.write_all(value.expose().as_bytes())
        .map_err(|e| fail("write", e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| fail("replace", e))
}

/// Where the run's directory goes: `$XDG_RUNTIME_DIR` (a per-user tmpfs) when it
/// is a directory of ours and no file-keeping worker runs as another user (who
/// could not enter it), else `/dev/shm`, else the system's temp directory.
fn choose_base(xdg: Option<PathBuf>, foreign: bool) -> PathBuf {
    let me = nix::unistd::geteuid().as_raw();
    if let Some(x) = xdg.filter(|x| x.is_absolute() && !foreign) {
        if std::fs::symlink_metadata(&x).is_ok_and(|m| m.is_dir() && m.uid() == me) {
            return x;
        }
    }
    let shm = Path::new("/dev/shm");
    if std::fs::metadata(shm).is_ok_and(|m| m.is_dir()) && is_tmpfs(shm) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

fn is_tmpfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Removes the key directories under `base` of runs that are gone: ours (same
/// uid), named by [`PREFIX`], whose `.lock` nobody holds. A directory with no
/// lock file (a run killed while creating it) goes too once a minute old.
pub(crate) fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        // Exactly the names this module makes (16 hex digits after the prefix).
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ours {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let lock = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.join(".lock"));
        let stale = match lock {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(_) => meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn workers(text: &str) -> Vec<WorkerPlan> {
        crate::plan::Plan::from_text(Path::new("/tmp/k/supervisor.toml"), text)
            .unwrap()
            .workers
    }

    const TWO: &str = "[[worker]]\nname = \"a\"\ncommand = [\"x\"]\nkeys = [\"K\"]\non_rotation = \"file\"\n\n[[worker]]\nname = \"b\"\ncommand = [\"x\"]\nkeys = [\"K\"]\n";

    #[test]
    fn files_are_private_replaced_atomically_and_removed() {
        let base = tempfile::tempdir().unwrap();
        let ws = workers(TWO);
        let mut k = KeysDir::create_in(base.path(), &ws, false).unwrap();
        assert!(k.keeps(0) && !k.keeps(1));
        let root = k.root().to_path_buf();
        assert_eq!(
            std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let v1 = Sensitive::new("first-value-123");
        assert_eq!(k.sync(0, &[("K".into(), v1.clone())]).unwrap(), ["K"]);
        // Unchanged: nothing rewritten.
        assert!(k.sync(0, &[("K".into(), v1)]).unwrap().is_empty());
        let file = root.join("a/K");
        let ino = std::fs::metadata(&file).unwrap().ino();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "first-value-123");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o400
        );
        k.sync(0, &[("K".into(), Sensitive::new("second-value-456"))])
            .unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "second-value-456");
        assert_ne!(
            std::fs::metadata(&file).unwrap().ino(),
            ino,
            "replaced, not rewritten in place"
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(root.join("a"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["K"]);
        let mut pairs = vec![("K".to_string(), "x".to_string())];
        k.extend_env(0, &mut pairs);
        assert!(pairs.contains(&(
            "AGENTSUP_KEYS_DIR".into(),
            root.join("a").display().to_string()
        )));
        assert!(pairs.contains(&("K_FILE".into(), file.display().to_string())));
        // A key no longer declared or resolved: its file goes.
        assert_eq!(k.sync(0, &[]).unwrap(), ["K"]);
        assert!(!file.exists());
        drop(k);
        assert!(!root.exists(), "removed when the run ends");
    }

    #[test]
    fn the_sweep_removes_only_directories_of_runs_that_are_gone() {
        let base = tempfile::tempdir().unwrap();
        let ws = workers(TWO);
        let live = KeysDir::create_in(base.path(), &ws, false).unwrap();
        // A run killed with SIGKILL: its directory stays, its lock is released.
        let mut dead = KeysDir::create_in(base.path(), &ws, false).unwrap();
        dead.sync(0, &[("K".into(), Sensitive::new("left-behind-1"))])
            .unwrap();
        let dead_root = dead.root().to_path_buf();
        dead.removed = true; // as if killed: Drop removes nothing
        drop(dead);
        let unrelated = base.path().join("agentsup-keys-abc123");
        std::fs::create_dir(&unrelated).unwrap();
        sweep_stale(base.path());
        assert!(!dead_root.exists());
        assert!(live.root().exists());
        assert!(unrelated.exists());
    }
}
