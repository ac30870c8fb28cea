//! What the one-shot commands (`check`, `env`, `status`, …) print on stdout, and
//! how: whole documents written at once, a closed pipe treated as success, colour
//! only on a terminal.

use std::io::{IsTerminal, Write};

use crate::exit::{Error, Result};

/// A report for people or for machines (`check`, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ReportFormat {
    /// Aligned text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Writes to stdout, treating a closed pipe (`agentsup check | head`) as success.
pub(crate) fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Stdout(e)),
    }
}

/// Colour only on a terminal, and never with `--no-color` or `NO_COLOR` set.
pub(crate) fn want_color(no_color: bool) -> bool {
    !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}
