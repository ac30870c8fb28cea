//! OS signals turned into supervisor events.
//!
//! Registration happens first thing in `run`, before sources are loaded: tokio's
//! registration is permanent for the process, and as PID 1 a signal with the
//! default disposition is ignored, so an early `docker stop` would otherwise be
//! lost until Docker's SIGKILL (see `reference/crates.md` §5).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM, SIGINT or SIGQUIT: stop everything (the number is kept for logs).
    Shutdown(i32),
    /// SIGHUP: re-read and re-check sources (SPEC 5).
    Reload,
}

/// The registered signal streams.
pub struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers the handlers. Must run inside a tokio runtime.
    pub fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal event.
    pub async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Shutdown(libc::SIGTERM),
            _ = self.int.recv() => SignalEvent::Shutdown(libc::SIGINT),
            _ = self.quit.recv() => SignalEvent::Shutdown(libc::SIGQUIT),
            _ = self.hup.recv() => SignalEvent::Reload,
        }
    }
}
