//! `dir` sources: one file per key, as Docker (`/run/secrets`) and Kubernetes Secret
//! volumes lay them out.
//!
//! Kubernetes projects a Secret as `KEY -> ..data/KEY`, where `..data` is a symlink
//! to a hidden timestamped directory that the kubelet swaps atomically on update.
//! Following the visible symlinks therefore always reads one consistent version;
//! every dotfile (and so every `..*` entry) is skipped. File names that are not
//! variable names are reported instead of silently dropped.
//!
//! Files are read defensively ([`super::safe_read`]): a link must stay inside the
//! directory, only regular files up to the source's `max_size` are read, and a
//! FIFO, device, socket or oversized file is a problem naming the file, never a
//! hang. Such per-key problems are errors here; [`super::load_all`] makes them
//! warnings for keys no worker declares.

use std::path::{Path, PathBuf};

use super::{Severity, SourceProblem};
use crate::plan::is_var_name;
use crate::secret::Sensitive;

/// What a directory held.
#[derive(Debug, Default)]
pub(crate) struct DirLoad {
    /// `(name, value, file)` in name order.
    pub entries: Vec<(String, Sensitive, PathBuf)>,
    /// Skipped entries and unreadable files.
    pub problems: Vec<SourceProblem>,
}

/// Reads every key file of `dir`. `Ok(None)` when the directory is absent and the
/// source is optional.
pub(crate) fn load(dir: &Path, optional: bool, max: u64) -> Result<Option<DirLoad>, SourceProblem> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => return Ok(None),
        Err(e) => {
            return Err(SourceProblem {
                severity: Severity::Error,
                location: dir.display().to_string(),
                key: None,
                message: format!(
                    "cannot read secret directory: {e}{}",
                    if e.kind() == std::io::ErrorKind::NotFound {
                        "; mount it, fix `path`, or mark the source `optional = true`"
                    } else {
                        ""
                    }
                ),
            });
        }
    };
    let mut out = DirLoad::default();
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for item in read {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                out.problems
                    .push(problem(dir, None, format!("cannot list entry: {e}")));
                continue;
            }
        };
        let file_name = item.file_name();
        let Some(name) = file_name.to_str() else {
            out.problems.push(SourceProblem {
                severity: Severity::Warning,
                location: item.path().display().to_string(),
                key: None,
                message: "file name is not valid UTF-8, so it cannot be a variable name; skipped"
                    .into(),
            });
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        names.push((name.to_string(), item.path()));
    }
    names.sort();
    for (name, path) in names {
        // Not `metadata()`, which would follow a link to anything: only a link's
        // own type is looked at here, and `read_secret_file` vets its target.
        let is_dir = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::metadata(&path).is_ok_and(|t| t.is_dir())
            }
            Ok(m) => m.is_dir(),
            Err(e) => {
                out.problems.push(problem(
                    &path,
                    Some(&name),
                    format!("cannot stat: {e}; skipped"),
                ));
                continue;
            }
        };
        if is_dir {
            out.problems.push(SourceProblem {
                severity: Severity::Warning,
                location: path.display().to_string(),
                key: None,
                message: "is a directory; a dir source reads only the files directly inside it (nested keys are skipped)".into(),
            });
            continue;
        }
        if !is_var_name(&name) {
            out.problems.push(SourceProblem {
                severity: Severity::Warning,
                location: path.display().to_string(),
                key: None,
                message: format!(
                    "file name {name:?} is not a variable name, so it is skipped; rename it to {:?} (letters, digits and `_`)",
                    suggest_name(&name)
                ),
            });
            continue;
        }
        match read_secret_file(&path, Some(dir), max) {
            Ok(v) => out.entries.push((name, v, path)),
            Err(reason) => out.problems.push(problem(&path, Some(&name), reason)),
        }
    }
    Ok(Some(out))
}

fn problem(path: &Path, key: Option<&str>, message: String) -> SourceProblem {
    SourceProblem {
        severity: Severity::Error,
        location: path.display().to_string(),
        key: key.map(str::to_string),
        message,
    }
}

/// Reads one secret file: a regular file of at most `max` bytes (a link must stay
/// inside `inside`, when given), UTF-8 required, one trailing LF or CRLF removed
/// (what `echo key > file` and `kubectl create secret --from-file` leave behind).
pub(crate) fn read_secret_file(
    path: &Path,
    inside: Option<&Path>,
    max: u64,
) -> Result<Sensitive, String> {
    let bytes = super::safe_read::read_regular(path, inside, max)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "content is not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(Sensitive::new(text))
}

fn suggest_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn kubernetes_layout_and_trimming() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let ts = d.join("..2026_11_23_10_00_00.1");
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("OPENAI_API_KEY"), "sk-one\r\n").unwrap();
        std::fs::write(ts.join("api-key"), "x").unwrap();
        symlink("..2026_11_23_10_00_00.1", d.join("..data")).unwrap();
        symlink("..data/OPENAI_API_KEY", d.join("OPENAI_API_KEY")).unwrap();
        symlink("..data/api-key", d.join("api-key")).unwrap();
        std::fs::write(d.join(".hidden"), "x").unwrap();
        std::fs::write(d.join("TWO_LINES"), "a\n\n").unwrap();
        let l = load(d, false, super::super::safe_read::DEFAULT_MAX)
            .unwrap()
            .unwrap();
        let got: Vec<(&str, &str)> = l
            .entries
            .iter()
            .map(|(n, v, _)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(
            got,
            vec![("OPENAI_API_KEY", "sk-one"), ("TWO_LINES", "a\n")]
        );
        assert_eq!(l.problems.len(), 1);
        assert!(
            l.problems[0]
                .message
                .contains("\"api-key\" is not a variable name")
        );
        assert!(l.problems[0].message.contains("API_KEY"));
    }

    #[test]
    fn missing_dir_optional_or_not() {
        assert!(
            load(Path::new("/nonexistent/agentsup"), true, 1)
                .unwrap()
                .is_none()
        );
        let e = load(Path::new("/nonexistent/agentsup"), false, 1).unwrap_err();
        assert!(e.message.contains("optional = true"));
    }
}
