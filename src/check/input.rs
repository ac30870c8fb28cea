//! What one value is checked against: the value, where it was written and what
//! the config says about its key. Built by [`super`], read by every value rule.

use regex::Regex;

use crate::secret::Provenance;
use crate::sources::dotenv::{Quote, RecordNote};

use super::provider::{Family, Host};

/// Where a value was written, which decides how to tell the user to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A dotenv record, with its quoting.
    Dotenv(Quote),
    /// A `dir` source file or a `*_FILE` indirection.
    SecretFile,
    /// agentsup's own environment.
    ProcessEnv,
    /// A `command` source.
    Command,
    /// `[env] vars` or a worker's `vars`.
    Config,
    /// Anything else.
    Other,
}

impl Origin {
    pub(crate) fn of(provenance: &Provenance, quote: Option<Quote>) -> Origin {
        match provenance {
            Provenance::Dotenv { .. } => Origin::Dotenv(quote.unwrap_or(Quote::None)),
            Provenance::SecretFile { .. } | Provenance::FileIndirection { .. } => {
                Origin::SecretFile
            }
            Provenance::ProcessEnv => Origin::ProcessEnv,
            Provenance::Command { .. } => Origin::Command,
            Provenance::GlobalVars | Provenance::WorkerVars => Origin::Config,
            Provenance::Agentsup => Origin::Other,
        }
    }
}

/// What one value is checked against.
pub(crate) struct ValueInput<'a> {
    /// The variable name.
    pub key: &'a str,
    /// The value the worker would get.
    pub value: &'a str,
    /// Where it was written.
    pub origin: Origin,
    /// Secret-shaped (by name or `secret = true`) or provider-shaped: the broad
    /// placeholder rules (not only the plain ones every value gets), the `#` and `$`
    /// rules apply, and stray whitespace is an error, not a warning.
    pub credential: bool,
    /// The provider, and whether `[keys.X] provider` named it (else inferred).
    pub provider: Option<(Family, bool)>,
    /// Where the worker's base URL for that provider points.
    pub host: Host,
    /// `[keys.X] pattern`: its text and the compiled regex.
    pub pattern: Option<&'a (String, Regex)>,
    /// Dotenv notes for the record.
    pub notes: &'a [RecordNote],
}
