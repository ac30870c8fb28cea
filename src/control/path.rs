//! Where the control socket of a config lives, the same answer in `run` and in the
//! clients (SPEC 8), and where the single-run lock is.
//!
//! Socket places, in order; the server takes the first that is usable and whose
//! path fits in `sun_path` (107 bytes plus the NUL), after probing every one of
//! them for a live supervisor; clients look in all of them:
//!
//! 1. `$XDG_RUNTIME_DIR/agentsup/<stem>-<hash>.sock`, when `XDG_RUNTIME_DIR` is an
//!    absolute directory of ours that no other user can write. `agentsup/` is
//!    created `0700`.
//! 2. `<config dir>/.<stem>.agentsup.sock`, when the config's directory belongs to
//!    us (or root), no other user can write it (no group or other write bit, so
//!    never `/tmp`), and we can.
//! 3. `/run/user/<uid>/agentsup/<stem>-<hash>.sock`, when `/run/user/<uid>` is a
//!    directory of ours: where `XDG_RUNTIME_DIR` points in a login session, so a
//!    client run from cron, `sudo` or `docker exec` (no `XDG_RUNTIME_DIR`) still
//!    finds a supervisor started from a login shell.
//! 4. `/tmp/agentsup-<uid>/<stem>-<hash>.sock`, the short fallback (the tmux layout):
//!    the directory is created `0700` and must belong to us.
//!
//! A directory other users can write is never used: someone else could plant a
//! socket there for our clients to talk to, or one in our way. A socket file that
//! belongs to another user is neither ours nor a reason to refuse to start.
//!
//! The single-run lock files ([`lock_file`]) sit beside the sockets, at every
//! usable place; which ones a run takes is decided in the `lock` module.
//!
//! `<hash>` is 12 hex digits of FNV-1a over the canonical (symlink-free, absolute)
//! config path, so two configs never share a socket in 1, 3 and 4, and every
//! spelling of one config path (relative, through a symlink) finds the same one.
//! FNV-1a is written out here because std's hasher may change between Rust
//! releases, and a client built later must still find a running supervisor.
//! `<stem>` is the config's file name without a trailing `.toml`; in 1, 3 and 4 it
//! is reduced to `[A-Za-z0-9._-]` and 40 bytes, because it is only there for people
//! to read.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

/// Longest usable socket path: `sun_path` holds 108 bytes including the NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Which of the rules produced a [`Candidate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// `$XDG_RUNTIME_DIR/agentsup/`.
    RuntimeDir,
    /// Beside the config file.
    BesideConfig,
    /// `/run/user/<uid>/agentsup/`.
    UserRunDir,
    /// `/tmp/agentsup-<uid>/`.
    Tmp,
}

/// One possible socket location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Which rule.
    pub place: Place,
    /// The directory holding the socket.
    pub dir: PathBuf,
    /// The socket itself.
    pub socket: PathBuf,
}

/// The config path every process agrees on: canonical when the file exists,
/// otherwise absolute (a client asking about a config that is gone still gets a
/// deterministic answer to print).
pub(crate) fn canonical_config(config: &Path) -> PathBuf {
    std::fs::canonicalize(config)
        .or_else(|_| std::path::absolute(config))
        .unwrap_or_else(|_| config.to_path_buf())
}

/// The effective uid, which owns the sockets and directories we make.
pub(crate) fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// 12 hex digits (48 bits) identifying `canonical`.
pub(crate) fn short_hash(canonical: &Path) -> String {
    format!("{:012x}", fnv1a64(canonical.as_os_str().as_bytes()) >> 16)
}

/// The config's file name without a trailing `.toml` (`supervisor.toml` →
/// `supervisor`, `prod.conf` → `prod.conf`).
fn stem(canonical: &Path) -> OsString {
    let name = canonical
        .file_name()
        .unwrap_or_else(|| OsStr::new("supervisor"));
    match name.as_bytes().strip_suffix(b".toml") {
        Some(s) if !s.is_empty() => OsStr::from_bytes(s).to_os_string(),
        _ => name.to_os_string(),
    }
}

/// `<stem>-<hash>.sock`, reduced to a portable, bounded file name.
fn hashed_name(canonical: &Path) -> String {
    let mut s: String = stem(canonical)
        .as_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    // Only ASCII is left, so byte truncation cannot split a character.
    s.truncate(40);
    format!("{s}-{}.sock", short_hash(canonical))
}

/// Every place the socket of `canonical` may be, in order of preference, without
/// touching the file system. Places whose path would not fit in `sun_path` are left
/// out; the last one always fits.
pub(crate) fn candidates(
    canonical: &Path,
    runtime_dir: Option<&OsStr>,
    uid: u32,
) -> Vec<Candidate> {
    let mut out = every_place(canonical, runtime_dir, uid);
    out.retain(|c| c.socket.as_os_str().len() <= MAX_SOCKET_PATH);
    out
}

/// [`candidates`] without the length limit: a lock file has none.
pub(crate) fn every_place(
    canonical: &Path,
    runtime_dir: Option<&OsStr>,
    uid: u32,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    let name = hashed_name(canonical);
    if let Some(rt) = runtime_dir.map(Path::new).filter(|p| p.is_absolute()) {
        let dir = rt.join("agentsup");
        out.push(Candidate {
            place: Place::RuntimeDir,
            socket: dir.join(&name),
            dir,
        });
    }
    if let Some(dir) = canonical.parent() {
        let mut file = OsString::from(".");
        file.push(stem(canonical));
        file.push(".agentsup.sock");
        out.push(Candidate {
            place: Place::BesideConfig,
            socket: dir.join(file),
            dir: dir.to_path_buf(),
        });
    }
    let dir = PathBuf::from(format!("/run/user/{uid}/agentsup"));
    if !out.iter().any(|c| c.dir == dir) {
        out.push(Candidate {
            place: Place::UserRunDir,
            socket: dir.join(&name),
            dir,
        });
    }
    let dir = tmp_dir(uid);
    out.push(Candidate {
        place: Place::Tmp,
        socket: dir.join(&name),
        dir,
    });
    out
}

/// `/tmp/agentsup-<uid>`: the private directory that does not depend on the
/// environment (`TMPDIR` is ignored too).
pub(crate) fn tmp_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/agentsup-{uid}"))
}

/// The single-run lock file of `canonical` at place `c`: `<stem>-<hash>.lock` in the
/// socket's directory, or `.<stem>.agentsup.lock` beside the config.
pub(crate) fn lock_file(c: &Candidate) -> PathBuf {
    c.socket.with_extension("lock")
}

/// Whether the server may put its socket at `c`. With `create`, directories we own
/// are created (`0700`) or tightened to `0700`; without it (clients, and
/// [`super::socket_path`]) nothing on disk changes and a missing directory counts
/// as usable, because the server would create it.
pub(crate) fn check(c: &Candidate, uid: u32, create: bool) -> Result<(), String> {
    match c.place {
        Place::RuntimeDir => {
            let rt = c.dir.parent().unwrap_or(Path::new("/"));
            let meta = std::fs::metadata(rt)
                .map_err(|e| format!("XDG_RUNTIME_DIR {}: {e}", rt.display()))?;
            // The XDG spec says the runtime dir belongs to the user; one that does
            // not is somebody else's (sudo keeps the variable), so it is not ours
            // to use.
            if !meta.is_dir() || meta.uid() != uid {
                return Err(format!(
                    "XDG_RUNTIME_DIR {} is not a directory of uid {uid}",
                    rt.display()
                ));
            }
            not_shared(rt, &meta)?;
            writable(rt)?;
            private_dir(&c.dir, uid, create)
        }
        Place::BesideConfig => {
            let meta =
                std::fs::metadata(&c.dir).map_err(|e| format!("{}: {e}", c.dir.display()))?;
            if meta.uid() != uid && meta.uid() != 0 {
                return Err(format!(
                    "the config's directory {} belongs to uid {}, who could replace the socket",
                    c.dir.display(),
                    meta.uid()
                ));
            }
            not_shared(&c.dir, &meta)?;
            writable(&c.dir)
        }
        Place::UserRunDir => {
            let run = c.dir.parent().unwrap_or(Path::new("/"));
            match std::fs::symlink_metadata(run) {
                Ok(m) if m.is_dir() && m.uid() == uid => {
                    not_shared(run, &m)?;
                    private_dir(&c.dir, uid, create)
                }
                Ok(_) => Err(format!("{} is not a directory of uid {uid}", run.display())),
                Err(e) => Err(format!("{}: {e}", run.display())),
            }
        }
        Place::Tmp => private_dir(&c.dir, uid, create),
    }
}

/// A directory whose group or other users may create files (`/tmp`, a `0775`
/// project directory) is not for our socket.
fn not_shared(dir: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {:o}), who could plant a socket there",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn writable(dir: &Path) -> Result<(), String> {
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
        .map_err(|e| format!("cannot create files in {}: {}", dir.display(), e.desc()))
}

/// A directory only `uid` can enter. One that exists must be a real directory (not
/// a symlink someone planted in /tmp) owned by `uid`.
fn private_dir(dir: &Path, uid: u32, create: bool) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.file_type().is_dir() {
                return Err(format!("{} exists and is not a directory", dir.display()));
            }
            if meta.uid() != uid {
                return Err(format!(
                    "{} belongs to uid {}, not to us (uid {uid})",
                    dir.display(),
                    meta.uid()
                ));
            }
            if create && meta.mode() & 0o077 != 0 {
                tighten(dir)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound && !create => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => tighten(dir),
                // Another agentsup made it between our look and our mkdir: check
                // it like any existing directory.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => private_dir(dir, uid, create),
                Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
            }
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// `chmod 0700`: mkdir's mode passes through the umask, which may be odd.
fn tighten(dir: &Path) -> Result<(), String> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot chmod 0700 {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_distinguishes_paths() {
        // Pinned: a client from a later build must find today's socket.
        assert_eq!(
            short_hash(Path::new("/srv/a/supervisor.toml")),
            "bcd2e2207d13"
        );
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            short_hash(Path::new("/srv/a/supervisor.toml")),
            short_hash(Path::new("/srv/b/supervisor.toml"))
        );
        assert_eq!(short_hash(Path::new("/x")).len(), 12);
    }

    #[test]
    fn candidates_follow_the_rules_in_order() {
        let c = candidates(
            Path::new("/srv/app/supervisor.toml"),
            Some(OsStr::new("/var/xdg/1000")),
            1000,
        );
        let h = short_hash(Path::new("/srv/app/supervisor.toml"));
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].place, Place::RuntimeDir);
        assert_eq!(
            c[0].socket,
            PathBuf::from(format!("/var/xdg/1000/agentsup/supervisor-{h}.sock"))
        );
        assert_eq!(
            c[1].socket,
            PathBuf::from("/srv/app/.supervisor.agentsup.sock")
        );
        assert_eq!(
            c[2].socket,
            PathBuf::from(format!("/run/user/1000/agentsup/supervisor-{h}.sock"))
        );
        assert_eq!(
            c[3].socket,
            PathBuf::from(format!("/tmp/agentsup-1000/supervisor-{h}.sock"))
        );
        // XDG_RUNTIME_DIR at its usual place is not listed twice.
        let c = candidates(
            Path::new("/srv/app/supervisor.toml"),
            Some(OsStr::new("/run/user/1000")),
            1000,
        );
        assert_eq!(c.iter().filter(|c| c.place == Place::UserRunDir).count(), 0);
        // A lock file sits beside each candidate socket.
        assert_eq!(
            lock_file(c.last().unwrap()),
            PathBuf::from(format!("/tmp/agentsup-1000/supervisor-{h}.lock"))
        );
        assert_eq!(
            lock_file(&c[1]),
            PathBuf::from("/srv/app/.supervisor.agentsup.lock")
        );
        // A relative or empty XDG_RUNTIME_DIR is ignored (the XDG spec says so).
        let c = candidates(Path::new("/srv/app/prod.conf"), Some(OsStr::new("run")), 0);
        assert_eq!(
            c[0].socket,
            PathBuf::from("/srv/app/.prod.conf.agentsup.sock")
        );
    }

    #[test]
    fn long_paths_fall_back_to_a_short_one() {
        let deep = format!("/{}/supervisor.toml", "d".repeat(120));
        let rt = format!("/{}", "r".repeat(100));
        let c = candidates(Path::new(&deep), Some(OsStr::new(&rt)), 4_294_967_295);
        let places: Vec<Place> = c.iter().map(|c| c.place).collect();
        assert_eq!(places, [Place::UserRunDir, Place::Tmp]);
        assert!(
            c.iter()
                .all(|c| c.socket.as_os_str().len() <= MAX_SOCKET_PATH)
        );
        // Odd and long stems are reduced.
        let odd = format!("/etc/{} ü.toml", "n".repeat(80));
        let c = candidates(Path::new(&odd), None, 0);
        let name = c
            .last()
            .unwrap()
            .socket
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(name.is_ascii() && name.len() == 40 + 1 + 12 + 5, "{name}");
    }
}
