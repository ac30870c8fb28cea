//! Finding the program to run on the worker's own `PATH` (SPEC 3).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{SpawnError, SpawnSpec};

/// Finds the file to execute for `program`, the way a shell would but on the
/// worker's `PATH` (`path_var`) rather than agentsup's.
///
/// A program containing `/` is used as-is, relative to `cwd`. Otherwise each `PATH`
/// entry is tried in order (an empty entry means `cwd`, as in POSIX shells, and a
/// relative one is relative to `cwd`) for a regular file with an execute bit.
pub(crate) fn resolve_program(
    program: &str,
    path_var: Option<&str>,
    cwd: &Path,
) -> Result<PathBuf, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError::EmptyCommand);
    }
    if program.contains('/') {
        let path = cwd.join(program);
        return match fs::metadata(&path) {
            Err(_) => Err(SpawnError::Missing {
                program: program.into(),
                path,
            }),
            Ok(meta) if !is_executable(&meta) => Err(SpawnError::NotExecutable {
                program: program.into(),
                path,
            }),
            Ok(_) => Ok(path),
        };
    }
    let Some(path_var) = path_var else {
        return Err(SpawnError::NoPath {
            program: program.into(),
        });
    };
    for dir in path_var.split(':') {
        let candidate = cwd.join(dir).join(program);
        if fs::metadata(&candidate).is_ok_and(|m| is_executable(&m)) {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotFound {
        program: program.into(),
        path: path_var.into(),
    })
}

fn is_executable(meta: &fs::Metadata) -> bool {
    // Any execute bit, as `which` does; an exec that still fails for permissions
    // is reported by `Command::spawn` with the OS error.
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// The value of `PATH` in an environment list (the last one wins, as in `Command`).
pub(crate) fn path_of(env: &[(String, String)]) -> Option<&str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
}

/// Checks `cwd` and resolves the program on the worker's PATH.
pub(super) fn check_and_resolve(spec: &SpawnSpec) -> Result<PathBuf, SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::EmptyCommand)?;
    match fs::metadata(&spec.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.clone(),
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        Err(source) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.clone(),
                source,
            });
        }
    }
    resolve_program(program, path_of(&spec.env), &spec.cwd)
}
