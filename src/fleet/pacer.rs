//! The pacer of automatic re-reads after failed ones (SPEC 5: "a crash-looping
//! source command is itself backed off").

use std::time::{Duration, Instant};

/// First pause of automatic re-reads after a failed one.
const HOLD_FIRST: Duration = Duration::from_secs(1);
/// Longest pause of automatic re-reads.
const HOLD_MAX: Duration = Duration::from_secs(60);

/// Paces the re-reads that auth failures ask for, after re-reads that failed
/// (SPEC 5: "a crash-looping source command is itself backed off").
///
/// Replicas back off on their own, but a fleet of them failing auth at different
/// moments would each trigger a re-read; when the secret store is down (or hands
/// out values that fail the checks) every one of those runs the `command` source
/// again. After a failed re-read, automatic ones wait 1 s, then 2 s, 4 s … up to
/// 60 s; a successful one resets that. Re-reads asked for by an operator (SIGHUP,
/// `agentsup reload`) or by a watched file changing are not held here (only by
/// the minimum interval between any two re-reads, [`super::REREAD_MIN_INTERVAL`]).
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    failures: u32,
    hold_until: Option<Instant>,
    /// An automatic re-read was asked for while held; it runs when the hold ends.
    deferred: bool,
}

impl Pacer {
    /// When an automatic re-read asked for at `now` must wait, until when.
    pub(crate) fn held_until(&self, now: Instant) -> Option<Instant> {
        self.hold_until.filter(|&t| t > now)
    }

    /// Records an automatic re-read held back. True if it is the first since the
    /// hold began (the caller arms one timer for it).
    pub(crate) fn defer(&mut self) -> bool {
        !std::mem::replace(&mut self.deferred, true)
    }

    /// The hold is over: true if a deferred re-read should run now.
    pub(crate) fn hold_over(&mut self) -> bool {
        std::mem::take(&mut self.deferred)
    }

    /// A re-read failed at `now`: returns how long automatic ones now wait.
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        let hold = HOLD_FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(HOLD_MAX);
        self.failures = self.failures.saturating_add(1);
        self.hold_until = Some(now + hold);
        hold
    }

    /// A re-read succeeded: automatic re-reads run at once again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.hold_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_double_from_one_second_to_a_minute_and_reset_on_success() {
        let mut p = Pacer::default();
        let now = Instant::now();
        assert_eq!(p.held_until(now), None);
        let holds: Vec<u64> = (0..9).map(|_| p.failed(now).as_secs()).collect();
        assert_eq!(holds, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.held_until(now), Some(now + HOLD_MAX));
        assert_eq!(p.held_until(now + HOLD_MAX), None, "a hold ends");
        p.succeeded();
        assert_eq!(p.held_until(now), None);
        assert_eq!(p.failed(now), HOLD_FIRST);
    }

    #[test]
    fn one_timer_per_hold_and_the_deferred_reread_runs_once() {
        let mut p = Pacer::default();
        assert!(p.defer(), "the first deferral arms the timer");
        assert!(!p.defer(), "later ones share it");
        assert!(p.hold_over());
        assert!(!p.hold_over(), "nothing deferred any more");
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut p = Pacer::default();
        let now = Instant::now();
        for _ in 0..100 {
            p.failed(now);
        }
        assert_eq!(p.failed(now), HOLD_MAX);
    }
}
