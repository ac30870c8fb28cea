//! Periodic refresh of `command` sources (issue 14): `refresh = "5m"` runs the
//! source again on a timer, `ttl_pointer = "/lease_duration"` at two thirds of the
//! lease its last output announced (as Vault Agent renews before a lease ends).
//!
//! A refresh is an ordinary re-read of every source (the one validated path,
//! `supervisor/reread.rs`), so changed values take the same road as a watched
//! file's change: key files, signals or rolling restarts by each worker's
//! `on_rotation`. This module is only the schedule, a pure state machine over
//! `Instant`s: which sources are due, and when the next one is after a re-read
//! succeeded (any re-read ran every command again) or a refresh failed (the old
//! values stay; it retries sooner, backing off: 5 s, 10 s, 20 s … up to its
//! normal period).

use std::time::{Duration, Instant};

use crate::plan::{Plan, SourceKindPlan};
use crate::sources::Snapshot;

/// First retry after a failed refresh.
const RETRY_FIRST: Duration = Duration::from_secs(5);

/// One refreshed source's schedule and counts.
#[derive(Debug, Clone)]
struct Source {
    /// Position in the plan (0-based).
    index: usize,
    program: String,
    every: Option<Duration>,
    ttl_pointer: bool,
    /// The last lease the command announced (seconds under `ttl_pointer`), if any.
    lease: Option<Duration>,
    due: Option<Instant>,
    /// A refresh was asked for and its re-read has not reported yet.
    pending: bool,
    failures: u32,
    ok: u64,
    failed: u64,
}

/// The refresh schedule of every `command` source with `refresh` or `ttl_pointer`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    sources: Vec<Source>,
}

/// A refresh that failed, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    /// `command `vault`` (source #2).
    pub what: String,
    /// Failures in a row.
    pub failures: u32,
    /// When it is tried again.
    pub retry_in: Duration,
}

impl Schedule {
    /// The schedule of `plan`'s sources, the first refresh counted from `now`
    /// (the start-up load, whose leases `snapshot` holds).
    pub(crate) fn new(plan: &Plan, snapshot: &Snapshot, now: Instant) -> Schedule {
        let mut sources = Vec::new();
        for s in &plan.sources {
            let SourceKindPlan::Command {
                argv,
                refresh,
                ttl_pointer,
                ..
            } = &s.kind
            else {
                continue;
            };
            if refresh.is_none() && ttl_pointer.is_none() {
                continue;
            }
            sources.push(Source {
                index: s.index,
                program: argv.first().cloned().unwrap_or_default(),
                every: *refresh,
                ttl_pointer: ttl_pointer.is_some(),
                lease: None,
                due: None,
                pending: false,
                failures: 0,
                ok: 0,
                failed: 0,
            });
        }
        let mut out = Schedule { sources };
        out.succeeded(snapshot, now, false);
        out
    }

    /// True when no source is refreshed.
    pub(crate) fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// When the earliest source is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.sources
            .iter()
            .filter(|s| !s.pending)
            .filter_map(|s| s.due)
            .min()
    }

    /// The sources due at `now`, described for the log (`command `vault``);
    /// they are pending until the next re-read reports.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for s in &mut self.sources {
            if !s.pending && s.due.is_some_and(|d| d <= now) {
                s.pending = true;
                s.due = None;
                out.push(describe(s));
            }
        }
        out
    }

    /// A re-read's values were adopted at `now`: every command ran again, so each
    /// source's next refresh counts from now, with the lease it announced.
    /// `counted` is false for the start-up load.
    pub(crate) fn succeeded(&mut self, snapshot: &Snapshot, now: Instant, counted: bool) {
        for s in &mut self.sources {
            if counted && s.pending {
                s.ok += 1;
            }
            s.pending = false;
            s.failures = 0;
            if s.ttl_pointer {
                s.lease = snapshot.leases.get(&s.index).copied().flatten();
            }
            s.due = period(s).map(|p| now + p);
        }
    }

    /// A re-read failed at `now` (its values were refused): the refreshes it was
    /// serving failed; each retries after a growing pause. Sources no refresh
    /// asked for keep their schedule.
    pub(crate) fn failed(&mut self, now: Instant) -> Vec<Failed> {
        let mut out = Vec::new();
        for s in &mut self.sources {
            if !s.pending {
                continue;
            }
            s.pending = false;
            s.failed += 1;
            s.failures = s.failures.saturating_add(1);
            let cap = period(s).unwrap_or(Duration::from_secs(300));
            let retry = RETRY_FIRST
                .saturating_mul(1u32 << (s.failures - 1).min(16))
                .min(cap)
                .max(RETRY_FIRST.min(cap));
            s.due = Some(now + retry);
            out.push(Failed {
                what: describe(s),
                failures: s.failures,
                retry_in: retry,
            });
        }
        out
    }

    /// What `/metrics` and `agentsup status` show.
    pub(crate) fn status(&self, now: Instant) -> Vec<crate::status::RefreshStatus> {
        self.sources
            .iter()
            .map(|s| crate::status::RefreshStatus {
                source: s.index + 1,
                program: program_name(&s.program),
                ok: s.ok,
                failed: s.failed,
                consecutive_failures: s.failures,
                next_in_secs: s
                    .due
                    .map(|d| d.saturating_duration_since(now).as_secs_f64()),
                lease_secs: s.lease.map(|l| l.as_secs_f64()),
            })
            .collect()
    }
}

/// The normal period: `refresh`, or two thirds of the lease, whichever is shorter.
/// None when neither applies (`ttl_pointer` alone, and no lease announced).
fn period(s: &Source) -> Option<Duration> {
    let by_lease = s
        .lease
        .filter(|l| !l.is_zero())
        .map(|l| (l * 2 / 3).max(Duration::from_secs(1)));
    match (s.every, by_lease) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn describe(s: &Source) -> String {
    format!(
        "command `{}` (source #{})",
        program_name(&s.program),
        s.index + 1
    )
}

/// The program's file name: its arguments and directories stay out of labels.
fn program_name(program: &str) -> String {
    std::path::Path::new(program)
        .file_name()
        .map_or_else(|| program.to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(extra: &str) -> Plan {
        Plan::from_text(
            Path::new("/tmp/r/supervisor.toml"),
            &format!(
                "[[source]]\ntype = \"command\"\ncommand = [\"/usr/bin/vault\", \"kv\"]\nformat = \"json\"\n{extra}\n[[source]]\ntype = \"env\"\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn refresh_runs_on_its_period_and_backs_off_after_failures() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&plan("refresh = \"5m\""), &Snapshot::default(), t0);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(300)));
        assert!(s.take_due(t0 + Duration::from_secs(299)).is_empty());
        let t1 = t0 + Duration::from_secs(300);
        assert_eq!(s.take_due(t1), ["command `vault` (source #1)"]);
        assert_eq!(s.next_due(), None, "pending until the re-read reports");
        let f = s.failed(t1);
        assert_eq!(f[0].retry_in, Duration::from_secs(5));
        s.take_due(t1 + Duration::from_secs(5));
        assert_eq!(s.failed(t1).remove(0).retry_in, Duration::from_secs(10));
        for _ in 0..10 {
            s.take_due(Instant::now() + Duration::from_secs(3600));
            s.failed(t1);
        }
        assert_eq!(
            s.next_due(),
            Some(t1 + Duration::from_secs(300)),
            "capped at the period"
        );
        let st = s.status(t1);
        assert_eq!(
            (st[0].ok, st[0].failed, st[0].consecutive_failures),
            (0, 12, 12)
        );
        s.take_due(Instant::now() + Duration::from_secs(3600));
        let t2 = t1 + Duration::from_secs(1000);
        s.succeeded(&Snapshot::default(), t2, true);
        let st = s.status(t2);
        assert_eq!((st[0].ok, st[0].consecutive_failures), (1, 0));
        assert_eq!(s.next_due(), Some(t2 + Duration::from_secs(300)));
    }

    #[test]
    fn a_lease_refreshes_at_two_thirds_and_the_shorter_period_wins() {
        let t0 = Instant::now();
        let mut snap = Snapshot::default();
        snap.leases.insert(0, Some(Duration::from_secs(90)));
        let s = Schedule::new(&plan("ttl_pointer = \"/lease_duration\""), &snap, t0);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(60)));
        let s = Schedule::new(
            &plan("ttl_pointer = \"/lease_duration\"\nrefresh = \"30s\""),
            &snap,
            t0,
        );
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(30)));
        // No lease announced (or 0: Vault's KV v2): nothing to schedule.
        snap.leases.insert(0, Some(Duration::ZERO));
        let s = Schedule::new(&plan("ttl_pointer = \"/lease_duration\""), &snap, t0);
        assert_eq!(s.next_due(), None);
        assert!(!s.is_empty());
        let s = Schedule::new(&plan(""), &snap, t0);
        assert!(s.is_empty());
    }
}
