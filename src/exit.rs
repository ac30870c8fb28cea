//! The top-level error type and the documented exit codes (SPEC 1).
//!
//! Every failure that reaches `main` is an [`Error`]; [`Error::exit_code`] is the only
//! place that maps failures to codes, so the codes stay consistent across commands.

/// Exit codes of the `agentsup` binary (SPEC 1).
pub(crate) mod code {
    /// All workers stopped on request, or all finished cleanly.
    pub(crate) const OK: u8 = 0;
    /// A worker failed for good, or the supervisor hit a runtime fault.
    pub(crate) const FAILURE: u8 = 1;
    /// Usage error (clap uses the same code).
    pub(crate) const USAGE: u8 = 2;
    /// Configuration or secret validation failed; nothing was started (`EX_CONFIG`).
    pub(crate) const CONFIG: u8 = 78;
}

pub(crate) use crate::diag::Located;

/// Every failure that ends a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be found or read.
    #[error("{0}")]
    ConfigNotFound(String),
    /// `supervisor.toml` is malformed or inconsistent; all problems are listed.
    #[error("{}", render_list(.0))]
    Config(Vec<Located>),
    /// A source could not be loaded, or a required key failed its checks. The report
    /// has already been printed; this only carries the exit code.
    #[error("{0}")]
    Validation(String),
    /// The command line asked for something impossible (unknown worker, …).
    #[error("{0}")]
    Usage(String),
    /// A worker failed for good, or the supervisor hit a fault at run time.
    #[error("{0}")]
    Runtime(String),
}

fn render_list(items: &[Located]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&item.to_string());
    }
    out
}

impl Error {
    /// The process exit code for this failure (SPEC 1).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ConfigNotFound(_) | Error::Config(_) | Error::Validation(_) => code::CONFIG,
            Error::Usage(_) => code::USAGE,
            Error::Runtime(_) => code::FAILURE,
        }
    }
}

/// Result alias used by commands.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
