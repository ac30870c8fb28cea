//! Running a worker under another user and group (`user` / `group` in a
//! `[[worker]]`), the only wall between two workers that the kernel enforces:
//! processes of different uids cannot read each other's `/proc/PID/environ` or
//! memory, signal each other, or attach with `ptrace`.
//!
//! Names are resolved with the system's user database (NSS, through nix) when the
//! plan is built, so `agentsup check` reports an unknown name and the forked child
//! only makes three raw system calls.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};
use serde::Deserialize;

/// A user or group as written in the config: a name or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdSpec {
    /// A numeric id (`user = 1000`, or the string `"1000"`).
    Id(u32),
    /// A name looked up in the user or group database.
    Name(String),
}

impl IdSpec {
    /// A string of digits counts as a number, as with `chown` and supervisord.
    fn numeric(&self) -> Option<u32> {
        match self {
            IdSpec::Id(n) => Some(*n),
            IdSpec::Name(s) => s.parse().ok(),
        }
    }
}

impl std::fmt::Display for IdSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdSpec::Id(n) => write!(f, "{n}"),
            IdSpec::Name(s) => write!(f, "{s:?}"),
        }
    }
}

/// The account a named (or numeric, but listed) user has, for the worker's
/// `HOME`, `USER` and `LOGNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name.
    pub name: String,
    /// The home directory.
    pub home: String,
}

impl Account {
    /// What a process run as this account gets for `HOME`, `USER` and
    /// `LOGNAME` where it would inherit agentsup's own; `None` for other names.
    pub(crate) fn variable(&self, name: &str) -> Option<&str> {
        match name {
            "HOME" => Some(&self.home),
            "USER" | "LOGNAME" => Some(&self.name),
            _ => None,
        }
    }
}

/// Credentials a worker runs under, resolved before any fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id.
    pub gid: u32,
    /// Supplementary groups: the user's (as `initgroups` would set them) for a
    /// name, none for a bare number.
    pub groups: Vec<u32>,
    /// The user's database entry, when it has one.
    pub account: Option<Account>,
}

/// Resolves `user` and `group` into credentials. `Ok(None)` when neither is set,
/// or when they name agentsup's own uid and gid (nothing to switch). The error is
/// a sentence fragment for the caller to prefix with the worker's name.
pub(crate) fn resolve(
    user: Option<&IdSpec>,
    group: Option<&IdSpec>,
) -> Result<Option<Creds>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let gid_of_group = match group {
        None => None,
        Some(g) => Some(match g.numeric() {
            Some(n) => n,
            None => {
                let IdSpec::Name(name) = g else {
                    unreachable!("numeric() covers Id")
                };
                match Group::from_name(name) {
                    Ok(Some(gr)) => gr.gid.as_raw(),
                    Ok(None) => return Err(format!("group {g} does not exist on this system")),
                    Err(e) => return Err(format!("cannot look up group {g}: {e}")),
                }
            }
        }),
    };
    let me_uid = Uid::effective().as_raw();
    let me_gid = Gid::effective().as_raw();
    let creds = match user {
        None => Creds {
            uid: me_uid,
            gid: gid_of_group.unwrap_or(me_gid),
            groups: Vec::new(),
            account: None,
        },
        Some(u) => {
            let (entry, by_name) = match u.numeric() {
                Some(n) => (
                    User::from_uid(Uid::from_raw(n))
                        .map_err(|e| format!("cannot look up user {u}: {e}"))?,
                    false,
                ),
                None => {
                    let IdSpec::Name(name) = u else {
                        unreachable!("numeric() covers Id")
                    };
                    match User::from_name(name) {
                        Ok(Some(pw)) => (Some(pw), true),
                        Ok(None) => return Err(format!("user {u} does not exist on this system")),
                        Err(e) => return Err(format!("cannot look up user {u}: {e}")),
                    }
                }
            };
            let uid = u
                .numeric()
                .unwrap_or_else(|| entry.as_ref().map_or(0, |pw| pw.uid.as_raw()));
            let gid = match (gid_of_group, &entry) {
                (Some(g), _) => g,
                (None, Some(pw)) => pw.gid.as_raw(),
                (None, None) => {
                    return Err(format!(
                        "user {u} has no entry in the user database, so it has no primary group; set `group` too"
                    ));
                }
            };
            let groups = match &entry {
                Some(pw) if by_name => {
                    let name = CString::new(pw.name.as_bytes())
                        .map_err(|_| format!("user {u}: name holds a NUL byte"))?;
                    nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
                        .map_err(|e| format!("cannot list the groups of user {u}: {e}"))?
                        .into_iter()
                        .map(Gid::as_raw)
                        .collect()
                }
                _ => Vec::new(),
            };
            Creds {
                uid,
                gid,
                groups,
                account: entry.map(|pw| Account {
                    name: pw.name,
                    home: pw.dir.to_string_lossy().into_owned(),
                }),
            }
        }
    };
    if me_uid != 0 {
        if creds.uid == me_uid && creds.gid == me_gid {
            return Ok(None);
        }
        return Err(format!(
            "agentsup runs as uid {me_uid}, not root, so it cannot start the worker as uid {} gid {}; \
             run agentsup as root (it switches each worker to its `user`) or remove `user`/`group`",
            creds.uid, creds.gid
        ));
    }
    Ok(Some(creds))
}

/// Switches the calling process to `creds`: supplementary groups, then group,
/// then user (after `setresuid` the others would be refused). Returns the errno
/// of the first call that failed.
///
/// Async-signal-safe and safe in a `CLONE_VM` child: raw system calls, because
/// glibc's `setuid` family broadcasts the change to every thread it knows of,
/// which in a child sharing agentsup's memory are agentsup's own threads.
pub(crate) fn switch_to(uid: u32, gid: u32, groups: &[u32]) -> Result<(), i32> {
    // SAFETY: setgroups reads `groups.len()` gid_t values from a live slice
    // (gid_t is u32 on Linux); setresgid/setresuid take integers only.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == -1
            || libc::syscall(libc::SYS_setresgid, gid, gid, gid) == -1
            || libc::syscall(libc::SYS_setresuid, uid, uid, uid) == -1
        {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_switch_without_user_or_group() {
        assert_eq!(resolve(None, None), Ok(None));
    }

    #[test]
    fn unknown_names_are_reported() {
        let e = resolve(Some(&IdSpec::Name("no-such-user-agentsup".into())), None).unwrap_err();
        assert!(
            e.contains("user \"no-such-user-agentsup\" does not exist"),
            "{e}"
        );
        let e = resolve(None, Some(&IdSpec::Name("no-such-group-agentsup".into()))).unwrap_err();
        assert!(
            e.contains("group \"no-such-group-agentsup\" does not exist"),
            "{e}"
        );
    }

    #[test]
    fn root_resolves_a_name_with_its_groups_and_a_number_without() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root (resolving another user is refused otherwise)");
            return;
        }
        let root = resolve(Some(&IdSpec::Name("root".into())), None)
            .unwrap()
            .unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        assert_eq!(root.account.as_ref().unwrap().name, "root");
        let bare = resolve(Some(&IdSpec::Id(0)), Some(&IdSpec::Id(5)))
            .unwrap()
            .unwrap();
        assert_eq!((bare.uid, bare.gid), (0, 5));
        assert!(
            bare.groups.is_empty(),
            "a bare number clears supplementary groups"
        );
        let e = resolve(Some(&IdSpec::Id(4_000_000)), None).unwrap_err();
        assert!(e.contains("set `group` too"), "{e}");
        let ok = resolve(
            Some(&IdSpec::Id(4_000_000)),
            Some(&IdSpec::Name("4000001".into())),
        )
        .unwrap()
        .unwrap();
        assert_eq!((ok.uid, ok.gid, ok.account), (4_000_000, 4_000_001, None));
    }
}
