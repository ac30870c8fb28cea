//! The vocabulary of problems, shared by the layers that find them: a
//! [`Severity`], a check `Finding` and a [`Located`] config error. A leaf module,
//! so `sources`, `check`, `probe` and `exit` need not import each other for it.
//! None of these types may ever hold a value.

use std::fmt;
use std::path::PathBuf;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; does not stop anything.
    Warning,
    /// Stops `run` and makes `check` exit 78.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem found by the checks: what, for which key and workers, where, and
/// what to do. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Errors stop `run` (exit 78); warnings do not.
    pub severity: Severity,
    /// Stable identifier for scripts and docs: `missing`, `empty`, `near-miss`,
    /// `whitespace`, `control-char`, `bom`, `quotes`, `placeholder`,
    /// `provider-shape`, `provider-mismatch`, `azure-endpoint`, `azure-api-version`,
    /// `pattern`, `worker-dotenv`, `source`, `duplicate`, `unquoted-hash`, `dollar`,
    /// `escape`, `plain-word`, `inherit-secret`, `command` (preflight), `probe-rejected`,
    /// `probe-unreachable`, `probe-unexpected`, `helper-argv` (see docs/config.md).
    pub code: &'static str,
    /// The variable concerned, when there is one.
    pub key: Option<String>,
    /// The selected workers that declare the key (or that the finding is about).
    pub workers: Vec<String>,
    /// Where the value (or problem) is: `.env:2`, a secret file, `process env`.
    pub location: Option<String>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Finding {
    /// Same finding apart from the workers: merged into one line of the report.
    pub(crate) fn same_as(&self, other: &Finding) -> bool {
        self.severity == other.severity
            && self.code == other.code
            && self.key == other.key
            && self.location == other.location
            && self.message == other.message
            && self.hint == other.hint
    }
}

/// One problem in a file, located as precisely as we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file the problem is in.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and what to do; never contains a secret value.
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}
