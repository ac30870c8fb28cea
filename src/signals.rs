//! OS signals turned into supervisor events, from the first instruction on, and
//! only from the operator.
//!
//! **From the first instruction.** `main` blocks SIGTERM, SIGINT, SIGQUIT and SIGHUP
//! before it does anything else ([`hold_early`]); `agentsup run` installs its
//! handlers before it forks the guard or parses the config (`Signals::install`),
//! then unblocks them, and every other command unblocks them at once
//! ([`release_early`]). A blocked signal stays pending instead of taking its default
//! action: without this, a SIGHUP 50 ms after exec killed an `agentsup run` busy
//! parsing a config of 2,000 workers, and as PID 1 (where the kernel drops a signal
//! with the default disposition) an early `docker stop` was lost, even though the
//! kernel keeps a *blocked* signal pending for PID 1 too.
//!
//! **Only from the operator.** Workers run as agentsup's uid and can signal it. A
//! signal whose sender (`si_pid` of the `siginfo` signal-hook's [`WithRawSiginfo`] keeps) runs under
//! agentsup (a worker, anything it started, a source command) is not a command: it
//! becomes `SignalEvent::Ignored`, which the dispatcher logs once per worker. The
//! sender is placed by walking its parent chain in `/proc` as soon as the signal is
//! read; a sender that has already exited by then cannot be placed and counts as
//! the operator's (`/bin/kill` exits at once), which the re-read pace bounds anyway.
//! Signals from outside agentsup's pid namespace (`docker stop`, `docker kill -s
//! HUP`, the kubelet) carry `si_pid` 0 and are the operator's.
//!
//! The handlers are signal-hook's (async-signal-safe: they store the `siginfo` and
//! write a byte to a socket); a thread named `agentsup-signals`, started once the
//! guard is forked (it must be forked from a single-threaded process), reads them
//! and feeds a channel the dispatcher selects on.

use std::collections::VecDeque;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithRawSiginfo;
use tokio::sync::mpsc;

use crate::sys::signal as sys_signal;

/// The signals `agentsup run` acts on.
const HANDLED: [libc::c_int; 4] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP];

/// What a signal asks the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalEvent {
    /// SIGTERM, SIGINT or SIGQUIT: stop everything (the number is kept for logs).
    Shutdown(i32),
    /// SIGHUP: re-read and re-check sources (SPEC 5).
    Reload,
    /// A handled signal sent by a process running under agentsup: not acted on.
    Ignored {
        /// The signal.
        sig: i32,
        /// Its sender.
        sender: u32,
        /// The sender's ancestor (or itself) whose parent is agentsup: a worker's
        /// pid, a source command's, a fork template's.
        below: u32,
    },
}

fn set_mask(how: SigmaskHow) {
    let set: SigSet = HANDLED
        .iter()
        .filter_map(|&s| Signal::try_from(s).ok())
        .collect();
    // Fails only for an invalid `how`, which these constants are not.
    let _ = pthread_sigmask(how, Some(&set), None);
}

/// Blocks the handled signals in the calling thread, which must be the main thread
/// before it starts any other: the first thing `main` does. A signal that arrives
/// now stays pending until `Signals::install` or [`release_early`].
pub fn hold_early() {
    set_mask(SigmaskHow::SIG_BLOCK);
}

/// Undoes [`hold_early`] for the commands that install no handler (`check`,
/// `status`, `exec`, …): a signal held meanwhile takes its default action now.
pub fn release_early() {
    set_mask(SigmaskHow::SIG_UNBLOCK);
}

/// The handlers, installed; nothing reads them yet.
pub(crate) struct Signals {
    info: SignalsInfo<WithRawSiginfo>,
}

impl Signals {
    /// Installs the handlers, then unblocks the signals (one held since
    /// [`hold_early`] is delivered to its handler now). Starts no thread: the guard
    /// is forked after this, from a single-threaded process.
    pub(crate) fn install() -> std::io::Result<Signals> {
        let info = SignalsInfo::<WithRawSiginfo>::new(HANDLED)?;
        release_early();
        Ok(Signals { info })
    }

    /// Starts the thread that reads the signals and places their senders. Any
    /// thread, no runtime needed; the events arrive on the returned stream.
    pub(crate) fn start(mut self) -> std::io::Result<SignalStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("agentsup-signals".into())
            .spawn(move || {
                let me = std::process::id();
                for info in self.info.forever() {
                    let event = classify(info.si_signo, sys_signal::sender(&info), me);
                    if tx.send(event).is_err() {
                        // Nobody listens any more (the run is ending); the
                        // handlers stay installed, so signals stay harmless.
                        continue;
                    }
                }
            })?;
        Ok(SignalStream {
            rx,
            kept: VecDeque::new(),
        })
    }
}

/// What signal `sig` from `sender` (`None`: the kernel, or a process outside our
/// pid namespace) means to agentsup, process `me`.
fn classify(sig: i32, sender: Option<u32>, me: u32) -> SignalEvent {
    if let Some((sender, below)) =
        sender.and_then(|s| crate::procfs::descends_from(s, me).map(|b| (s, b)))
    {
        return SignalEvent::Ignored { sig, sender, below };
    }
    if sig == SIGHUP {
        SignalEvent::Reload
    } else {
        SignalEvent::Shutdown(sig)
    }
}

/// Most events kept aside by [`SignalStream::next_stop`] (a flood of ignored
/// signals during start-up must not grow memory).
const MAX_KEPT: usize = 16;

/// The signal events of a run, in order.
pub(crate) struct SignalStream {
    rx: mpsc::UnboundedReceiver<SignalEvent>,
    /// Events read by [`SignalStream::next_stop`] while waiting for a stop, to be
    /// handled once the dispatcher runs.
    kept: VecDeque<SignalEvent>,
}

impl SignalStream {
    /// The next signal event.
    pub(crate) async fn next(&mut self) -> SignalEvent {
        if let Some(ev) = self.kept.pop_front() {
            return ev;
        }
        match self.rx.recv().await {
            Some(ev) => ev,
            // The reading thread is gone (it never ends on its own): no more
            // signals will come.
            None => std::future::pending().await,
        }
    }

    /// The next event if one is ready.
    pub(crate) fn try_next(&mut self) -> Option<SignalEvent> {
        self.kept.pop_front().or_else(|| self.rx.try_recv().ok())
    }

    /// Waits for a stop signal (its number); the other events are kept, in order,
    /// for [`SignalStream::next`]. A stop signal among the kept ones wins at once.
    pub(crate) async fn next_stop(&mut self) -> i32 {
        if let Some(&SignalEvent::Shutdown(sig)) = self
            .kept
            .iter()
            .find(|e| matches!(e, SignalEvent::Shutdown(_)))
        {
            return sig;
        }
        loop {
            let Some(ev) = self.rx.recv().await else {
                return std::future::pending().await;
            };
            match ev {
                SignalEvent::Shutdown(sig) => return sig,
                SignalEvent::Reload if self.kept.contains(&SignalEvent::Reload) => {}
                ev if self.kept.len() < MAX_KEPT => self.kept.push_back(ev),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_from_below_is_ignored_and_one_from_elsewhere_obeyed() {
        let me = std::process::id();
        #[allow(clippy::disallowed_methods)] // waited on below, by this test
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let c = child.id();
        assert_eq!(
            classify(SIGHUP, Some(c), me),
            SignalEvent::Ignored {
                sig: SIGHUP,
                sender: c,
                below: c
            }
        );
        assert!(matches!(
            classify(SIGTERM, Some(c), me),
            SignalEvent::Ignored { sig: SIGTERM, .. }
        ));
        let parent = std::os::unix::process::parent_id();
        assert_eq!(classify(SIGHUP, Some(parent), me), SignalEvent::Reload);
        assert_eq!(classify(SIGHUP, None, me), SignalEvent::Reload);
        assert_eq!(classify(SIGINT, None, me), SignalEvent::Shutdown(SIGINT));
        assert_eq!(
            classify(SIGQUIT, Some(me), me),
            SignalEvent::Shutdown(SIGQUIT),
            "our own signal is ours"
        );
        let _ = child.kill();
        #[allow(clippy::disallowed_methods)]
        let _ = child.wait();
    }

    #[tokio::test]
    async fn waiting_for_a_stop_keeps_the_rest_in_order() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = SignalStream {
            rx,
            kept: VecDeque::new(),
        };
        let ignored = SignalEvent::Ignored {
            sig: SIGHUP,
            sender: 7,
            below: 7,
        };
        for ev in [
            SignalEvent::Reload,
            ignored,
            SignalEvent::Reload,
            SignalEvent::Shutdown(SIGTERM),
        ] {
            tx.send(ev).unwrap();
        }
        assert_eq!(s.next_stop().await, SIGTERM);
        assert_eq!(s.try_next(), Some(SignalEvent::Reload));
        assert_eq!(s.try_next(), Some(ignored));
        assert_eq!(s.try_next(), None, "two reloads kept as one");
        tx.send(SignalEvent::Shutdown(SIGINT)).unwrap();
        assert_eq!(s.next().await, SignalEvent::Shutdown(SIGINT));
    }
}
