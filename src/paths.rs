//! Paths as people read them.

use std::path::{Component, Path, PathBuf};

/// How the config file was found, for the hints of messages about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `-c FILE`.
    Flag,
    /// `$AGENTSUP_CONFIG`.
    EnvVar,
    /// `./supervisor.toml`.
    Default,
}

/// `p` with `.` components dropped and each `dir/..` pair folded, for display only
/// (`examples/python-openai/../demo/secrets/KEY` → `examples/demo/secrets/KEY`).
/// Lexical: never used to open anything, where a symlinked `dir` would make
/// `dir/..` mean something else.
pub(crate) fn tidy(p: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::tidy;
    use std::path::Path;

    #[test]
    fn folds_parent_and_current_components() {
        let t = |s: &str| tidy(Path::new(s)).display().to_string();
        assert_eq!(
            t("examples/python-openai/../demo/secrets/KEY"),
            "examples/demo/secrets/KEY"
        );
        assert_eq!(t("./a/./b"), "a/b");
        assert_eq!(t("../x/../y"), "../y");
        assert_eq!(t("/../etc"), "/etc");
        assert_eq!(t("a/.."), ".");
    }
}
