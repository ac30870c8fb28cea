//! One rule's verdict, shared by the value rules ([`super::rules`]), the placeholder
//! rules ([`super::placeholder`]) and the provider rules ([`super::provider`]),
//! which therefore need not import each other.

use crate::diag::Severity;

/// One rule's verdict; the caller adds the key's workers and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

pub(crate) fn hit(
    severity: Severity,
    code: &'static str,
    message: String,
    hint: impl Into<Option<String>>,
) -> Hit {
    Hit {
        severity,
        code,
        message,
        hint: hint.into(),
    }
}
