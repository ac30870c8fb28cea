//! `/metrics`: the [`Status`] snapshot rendered with prometheus-client.
//!
//! A fresh [`Registry`] is built on every scrape. Every number already lives in the
//! snapshot the dispatcher publishes (its counters only ever grow), so a persistent
//! registry would just be a second copy to keep in sync — and a place where a
//! replica or worker that no longer exists could linger. A scrape costs a few
//! allocations per replica, which is nothing at Prometheus' 15 s interval.
//!
//! Two formats, chosen from the `Accept` header as the official Go and Python
//! clients do: OpenMetrics 1.0.0 (what prometheus-client writes, and what
//! Prometheus asks for first) when the client accepts
//! `application/openmetrics-text`, else the classic text format 0.0.4 (curl,
//! older agents, `prometheus_client.parser`). The classic form is derived from the
//! OpenMetrics text; see [`to_classic`].

use std::collections::{BTreeMap, HashSet};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::status::Status;

/// Replica states (SPEC 5, `crate::replica::label`). Every replica gets one series
/// per state — 1 for its current state, 0 for the others — so an alert on
/// `state="auth-blocked"` sees the series go to 0 instead of vanishing. A state
/// missing here still shows up (as an extra series) for the replica in it.
const STATES: [&str; 8] = [
    "starting",
    "running",
    "stopping",
    "backoff",
    "auth-blocked",
    "failed",
    "stopped",
    "exited",
];

/// Restart reasons the dispatcher records (`crate::status::Counters::restarts`).
/// They start at 0 for every worker, so that `increase()` sees the first restart
/// (a counter that appears at 1 has no earlier sample to compare with).
const REASONS: [&str; 6] = ["crash", "auth", "ok", "rotation", "reload", "manual"];

/// Label sets: `(name, value)` pairs; values are worker names, indices, states and
/// reasons — never anything from an environment.
type Labels = Vec<(&'static str, String)>;

/// Which exposition format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text, ending in `# EOF`.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Classic,
}

impl Format {
    /// OpenMetrics when `accept` lists `application/openmetrics-text` with a
    /// non-zero quality (Prometheus does, first), else the classic text format,
    /// which every consumer understands.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            if !media.eq_ignore_ascii_case("application/openmetrics-text") {
                return false;
            }
            // `q=0` means "not acceptable" (RFC 9110 12.4.2).
            !parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
                })
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Renders `status` in `format`. `uptime_secs` is passed in because the snapshot's
/// own uptime is only as fresh as the last event; `ready` is the `/readyz` verdict.
pub fn render(status: &Status, uptime_secs: f64, ready: bool, format: Format) -> String {
    let open = openmetrics(status, uptime_secs, ready);
    match format {
        Format::OpenMetrics => open,
        Format::Classic => to_classic(&open),
    }
}

fn openmetrics(status: &Status, uptime_secs: f64, ready: bool) -> String {
    let mut registry = Registry::default();
    let workers = status.workers();

    let up = Family::<Labels, Gauge>::default();
    let replicas = Family::<Labels, Gauge>::default();
    let state = Family::<Labels, Gauge>::default();
    for w in &workers {
        let worker = vec![("worker", w.to_string())];
        // Touch both so a worker with nothing running still reports 0.
        up.get_or_create(&worker).set(0);
        replicas.get_or_create(&worker).set(0);
    }
    for r in &status.replicas {
        let worker = vec![("worker", r.worker.clone())];
        replicas.get_or_create(&worker).inc();
        if r.state == "running" {
            up.get_or_create(&worker).inc();
        }
        let extra = (!STATES.contains(&r.state.as_str())).then_some(r.state.as_str());
        for s in STATES.iter().copied().chain(extra) {
            let labels = vec![
                ("worker", r.worker.clone()),
                ("replica", r.replica.to_string()),
                ("state", s.to_string()),
            ];
            state
                .get_or_create(&labels)
                .set(i64::from(s == r.state.as_str()));
        }
    }
    registry.register(
        "agentsup_worker_up",
        "Replicas of the worker whose process is running",
        up,
    );
    registry.register(
        "agentsup_worker_replicas",
        "Replicas of the worker in the configuration",
        replicas,
    );
    registry.register(
        "agentsup_replica_state",
        "1 for the state each replica is in, 0 for the others (starting, running, stopping, backoff, auth-blocked, failed, stopped, exited)",
        state,
    );

    let restarts = Family::<Labels, Counter>::default();
    let mut by_reason: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for w in &workers {
        for reason in REASONS {
            by_reason.insert((w, reason), 0);
        }
    }
    for ((w, reason), n) in &status.counters.restarts {
        by_reason.insert((w.as_str(), reason.as_str()), *n);
    }
    for ((w, reason), n) in by_reason {
        restarts
            .get_or_create(&vec![
                ("worker", w.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc_by(n);
    }
    // prometheus-client appends `_total` to counters itself.
    registry.register(
        "agentsup_restarts",
        "Restarts of replicas, by worker and by reason (the exit class that caused them: crash, auth, ok; or rotation, reload, manual)",
        restarts,
    );

    let auth = Family::<Labels, Counter>::default();
    for w in &workers {
        let n = status.counters.auth_failures.get(*w).copied().unwrap_or(0);
        auth.get_or_create(&vec![("worker", w.to_string())])
            .inc_by(n);
    }
    registry.register(
        "agentsup_auth_failures",
        "Worker exits classified as authentication failures (a provider rejected a credential)",
        auth,
    );

    let reloads = Counter::<u64>::default();
    reloads.inc_by(status.counters.secret_reloads);
    registry.register(
        "agentsup_secret_reloads",
        "Re-reads of the secret sources whose values passed the checks and were adopted",
        reloads,
    );
    let reload_failures = Counter::<u64>::default();
    reload_failures.inc_by(status.counters.secret_reload_failures);
    registry.register(
        "agentsup_secret_reload_failures",
        "Re-reads of the secret sources whose values failed the checks and were refused",
        reload_failures,
    );

    let ready_gauge = Gauge::<i64>::default();
    ready_gauge.set(i64::from(ready));
    registry.register(
        "agentsup_ready",
        "1 when /readyz answers 200: every worker has a running replica and none is auth-blocked or failed",
        ready_gauge,
    );

    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(uptime_secs);
    registry.register_with_unit(
        "agentsup_uptime",
        "Seconds since the supervisor started supervising",
        Unit::Seconds,
        uptime,
    );

    let mut out = String::new();
    // Writing into a String cannot fail; the only error source is fmt::Write.
    if encode(&mut out, &registry).is_err() {
        out = "# EOF\n".into();
    }
    out
}

/// OpenMetrics text → classic text 0.0.4, for the metrics [`openmetrics`] writes.
///
/// The two differ, for what we emit, only in framing: classic has no `# EOF` and no
/// `# UNIT`, and a counter's `# HELP`/`# TYPE` name its samples' full name
/// (`agentsup_restarts_total`), where OpenMetrics names the family
/// (`agentsup_restarts`). Without that rename, a classic parser (the Python
/// client's `text_string_to_metric_families`) would read every counter sample as
/// an untyped metric of its own. Sample lines, label escaping (`\\`, `\"`, `\n`)
/// and number formats are the same in both; we emit no `_created` samples,
/// exemplars or timestamps.
fn to_classic(open: &str) -> String {
    let counters: HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|kw| {
            let rest = line.strip_prefix(kw)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{kw}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Counters, ReplicaStatus};

    fn replica(worker: &str, replica: u32, state: &str) -> ReplicaStatus {
        ReplicaStatus {
            worker: worker.into(),
            replica,
            pid: None,
            state: state.into(),
            uptime_secs: None,
            restarts: 0,
            last_exit: None,
        }
    }

    fn sample() -> Status {
        let mut counters = Counters::default();
        counters
            .restarts
            .insert(("planner".into(), "auth".into()), 3);
        counters.auth_failures.insert("planner".into(), 4);
        counters.secret_reloads = 2;
        counters.secret_reload_failures = 1;
        Status {
            replicas: vec![
                replica("planner", 0, "running"),
                replica("planner", 1, "auth-blocked"),
                replica("odd\"name", 0, "backoff"),
            ],
            counters,
            ..Status::default()
        }
    }

    #[test]
    fn negotiates_openmetrics_only_when_accepted() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn openmetrics_has_every_family_and_ends_in_eof() {
        let text = render(&sample(), 12.5, false, Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        for needle in [
            "# TYPE agentsup_worker_up gauge",
            "agentsup_worker_up{worker=\"planner\"} 1\n",
            "agentsup_worker_replicas{worker=\"planner\"} 2\n",
            "agentsup_replica_state{worker=\"planner\",replica=\"1\",state=\"auth-blocked\"} 1\n",
            "agentsup_replica_state{worker=\"planner\",replica=\"1\",state=\"running\"} 0\n",
            "# TYPE agentsup_restarts counter",
            "agentsup_restarts_total{worker=\"planner\",reason=\"auth\"} 3\n",
            "agentsup_restarts_total{worker=\"planner\",reason=\"crash\"} 0\n",
            "agentsup_auth_failures_total{worker=\"planner\"} 4\n",
            "agentsup_secret_reloads_total 2\n",
            "agentsup_secret_reload_failures_total 1\n",
            "agentsup_ready 0\n",
            "# UNIT agentsup_uptime_seconds seconds",
            "agentsup_uptime_seconds 12.5\n",
            // Label values are escaped by prometheus-client.
            "agentsup_worker_up{worker=\"odd\\\"name\"} 0\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        // Every HELP line has text.
        assert!(
            text.lines()
                .filter(|l| l.starts_with("# HELP "))
                .all(|l| l.split(' ').count() > 3),
            "{text}"
        );
    }

    #[test]
    fn classic_names_counters_by_their_samples_and_has_no_eof() {
        let text = render(&sample(), 1.0, true, Format::Classic);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
        assert!(
            text.contains("# TYPE agentsup_restarts_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP agentsup_restarts_total Restarts"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE agentsup_secret_reloads_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE agentsup_worker_up gauge\n"), "{text}");
        assert!(
            text.contains("# TYPE agentsup_uptime_seconds gauge\n"),
            "{text}"
        );
        assert!(text.contains("agentsup_ready 1\n"), "{text}");
    }

    #[test]
    fn an_unknown_state_still_shows() {
        let status = Status {
            replicas: vec![replica("w", 0, "hibernating")],
            ..Status::default()
        };
        let text = render(&status, 0.0, false, Format::OpenMetrics);
        assert!(
            text.contains(
                "agentsup_replica_state{worker=\"w\",replica=\"0\",state=\"hibernating\"} 1\n"
            ),
            "{text}"
        );
    }
}
