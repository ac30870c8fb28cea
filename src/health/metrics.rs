//! `/metrics`: the [`Status`] snapshot rendered with prometheus-client.
//!
//! A fresh [`Registry`] is built on every scrape, holding one [`Collector`] that
//! writes constant metrics from the snapshot. Every number already lives in the
//! snapshot the dispatcher publishes (its counters only ever grow, so constant
//! counters are still monotonic), so a persistent registry would just be a second
//! copy to keep in sync. A scrape costs a few allocations per replica, which is
//! nothing at Prometheus' 15 s interval.
//!
//! Two formats, chosen from the `Accept` header as the official Go and Python
//! clients do: OpenMetrics 1.0.0 (what prometheus-client writes, and what
//! Prometheus asks for first) when the client accepts
//! `application/openmetrics-text`, else the classic text format 0.0.4 (curl,
//! older agents, `prometheus_client.parser`). The classic form is derived from the
//! OpenMetrics text; see [`to_classic`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::replica::StateKind;
use crate::status::{RestartReason, Status};

// Every replica gets one `agentsup_replica_state` series per state
// (`StateKind::ALL`) — 1 for its current state, 0 for the others — so an alert on
// `state="auth-blocked"` sees the series go to 0 instead of vanishing. Restart
// reasons (`RestartReason::LISTED`) start at 0 for every worker, so that
// `increase()` sees the first restart (a counter that appears at 1 has no earlier
// sample to compare with).

/// Label sets: `(name, value)` pairs; values are worker names, indices, states and
/// reasons — never anything from an environment.
type Labels = Vec<(&'static str, String)>;

/// Which exposition format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// OpenMetrics 1.0.0 text, ending in `# EOF`.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Classic,
}

impl Format {
    /// OpenMetrics when `accept` lists `application/openmetrics-text` with a
    /// non-zero quality (Prometheus does, first), else the classic text format,
    /// which every consumer understands.
    pub(super) fn negotiate(accept: Option<&str>) -> Format {
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
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Renders `status` in `format`. `uptime_secs` is passed in because the snapshot's
/// own uptime is only as fresh as the last event; `ready` is the `/readyz` verdict.
pub(super) fn render(
    status: &Arc<Status>,
    uptime_secs: f64,
    ready: bool,
    format: Format,
) -> String {
    let open = openmetrics(status, uptime_secs, ready);
    match format {
        Format::OpenMetrics => open,
        Format::Classic => to_classic(&open),
    }
}

fn openmetrics(status: &Arc<Status>, uptime_secs: f64, ready: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        status: status.clone(),
        uptime_secs,
        ready,
    }));
    let mut out = String::new();
    // Writing into a String cannot fail: fmt::Write for String never errors, and
    // our collector only fails when the writer does.
    if encode(&mut out, &registry).is_err() {
        out = "# EOF\n".into();
    }
    out
}

/// The snapshot as a prometheus-client [`Collector`]: constant metrics, written in
/// config order (workers), then replica order, then `StateKind::ALL` / `RestartReason::LISTED`
/// order. (A `Family` would write its series in hash order, a different order on
/// every scrape.)
#[derive(Debug)]
struct Snapshot {
    status: Arc<Status>,
    uptime_secs: f64,
    ready: bool,
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let status = &self.status;
        let workers = status.workers();
        let per_worker = |f: &dyn Fn(&str) -> i64| -> Vec<(Labels, i64)> {
            workers
                .iter()
                .map(|w| (vec![("worker", w.to_string())], f(w)))
                .collect()
        };
        let count = |w: &str, pred: &dyn Fn(StateKind) -> bool| {
            let n = status
                .replicas
                .iter()
                .filter(|r| r.worker == w && pred(r.state))
                .count();
            i64::try_from(n).unwrap_or(i64::MAX)
        };

        gauges(
            &mut enc,
            "agentsup_worker_up",
            "Replicas of the worker whose process is running",
            per_worker(&|w| count(w, &StateKind::is_running)),
        )?;
        gauges(
            &mut enc,
            "agentsup_worker_replicas",
            "Replicas of the worker in the configuration",
            per_worker(&|w| count(w, &|_| true)),
        )?;

        let mut states = Vec::new();
        for r in &status.replicas {
            for s in StateKind::ALL {
                let labels = vec![
                    ("worker", r.worker.clone()),
                    ("replica", r.replica.to_string()),
                    ("state", s.to_string()),
                ];
                states.push((labels, i64::from(s == r.state)));
            }
        }
        gauges(
            &mut enc,
            "agentsup_replica_state",
            "1 for the state each replica is in, 0 for the others (starting, running, stopping, backoff, auth-blocked, failed, stopped, exited)",
            states,
        )?;

        // prometheus-client appends `_total` to counter names itself.
        let mut restarts = Vec::new();
        for w in &workers {
            let mine = status.counters.restarts.get(*w);
            let extra = mine
                .into_iter()
                .flat_map(|m| m.keys().copied())
                .filter(|r| !RestartReason::LISTED.contains(r));
            for reason in RestartReason::LISTED.into_iter().chain(extra) {
                let n = mine.and_then(|m| m.get(&reason)).copied().unwrap_or(0);
                let labels = vec![("worker", w.to_string()), ("reason", reason.to_string())];
                restarts.push((labels, n));
            }
        }
        counters(
            &mut enc,
            "agentsup_restarts",
            "Restarts of replicas, by worker and reason: the exit class that caused them (crash, auth, ok) or rotation, reload, manual",
            restarts,
        )?;
        counters(
            &mut enc,
            "agentsup_auth_failures",
            "Worker exits classified as authentication failures (a provider rejected a credential)",
            workers
                .iter()
                .map(|w| {
                    let n = status.counters.auth_failures.get(*w).copied().unwrap_or(0);
                    (vec![("worker", w.to_string())], n)
                })
                .collect(),
        )?;

        // Only with a refreshed `command` source: a config without one keeps its
        // exposition as it was.
        if !status.refresh.is_empty() {
            let labels = |r: &crate::status::RefreshStatus| {
                vec![
                    ("source", r.source.to_string()),
                    ("program", r.program.clone()),
                ]
            };
            let mut runs = Vec::new();
            for r in &status.refresh {
                for (result, n) in [("ok", r.ok), ("failed", r.failed)] {
                    let mut l = labels(r);
                    l.push(("result", result.to_string()));
                    runs.push((l, n));
                }
            }
            counters(
                &mut enc,
                "agentsup_source_refreshes",
                "Timed refreshes of command sources (refresh, ttl_pointer), by result: ok (values adopted) or failed (the old values stayed)",
                runs,
            )?;
            gauges(
                &mut enc,
                "agentsup_source_refresh_consecutive_failures",
                "Refreshes of the command source that failed since its last success",
                status
                    .refresh
                    .iter()
                    .map(|r| (labels(r), i64::from(r.consecutive_failures)))
                    .collect(),
            )?;
        }
        single(
            &mut enc,
            "agentsup_secret_reloads",
            "Re-reads of the secret sources whose values passed the checks and were adopted",
            None,
            ConstCounter::new(status.counters.secret_reloads),
        )?;
        single(
            &mut enc,
            "agentsup_secret_reload_failures",
            "Re-reads of the secret sources whose values failed the checks and were refused",
            None,
            ConstCounter::new(status.counters.secret_reload_failures),
        )?;
        single(
            &mut enc,
            "agentsup_ready",
            "1 when /readyz answers 200: every worker has a running replica and none is auth-blocked or failed",
            None,
            ConstGauge::new(i64::from(self.ready)),
        )?;
        single(
            &mut enc,
            "agentsup_uptime",
            "Seconds since the supervisor started supervising",
            Some(&Unit::Seconds),
            ConstGauge::new(self.uptime_secs),
        )
    }
}

/// One gauge family, series in the given order.
fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<(Labels, i64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in &series {
        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// One counter family, series in the given order.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: Vec<(Labels, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in &series {
        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// One metric without labels (written without `{}`).
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let encoder = enc.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(encoder)
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

    fn replica(worker: &str, replica: u32, state: StateKind) -> ReplicaStatus {
        ReplicaStatus {
            worker: worker.into(),
            replica,
            pid: None,
            state,
            uptime_secs: None,
            restarts: 0,
            last_exit: None,
            ready: None,
        }
    }

    fn sample() -> Status {
        let mut counters = Counters::default();
        counters
            .restarts
            .entry("planner".into())
            .or_default()
            .insert(RestartReason::Auth, 3);
        counters.auth_failures.insert("planner".into(), 4);
        counters.secret_reloads = 2;
        counters.secret_reload_failures = 1;
        Status {
            replicas: vec![
                replica("planner", 0, StateKind::Running),
                replica("planner", 1, StateKind::AuthBlocked),
                replica("odd\"name", 0, StateKind::Backoff),
            ],
            counters,
            ..Status::default()
        }
    }

    #[test]
    fn refreshed_sources_have_their_own_series_and_others_none() {
        let text = render(&Arc::new(sample()), 1.0, true, Format::Classic);
        assert!(!text.contains("agentsup_source_refresh"), "{text}");
        let mut status = sample();
        status.refresh.push(crate::status::RefreshStatus {
            source: 2,
            program: "vault".into(),
            ok: 5,
            failed: 2,
            consecutive_failures: 1,
            ..Default::default()
        });
        let text = render(&Arc::new(status), 1.0, true, Format::Classic);
        for line in [
            "agentsup_source_refreshes_total{source=\"2\",program=\"vault\",result=\"ok\"} 5\n",
            "agentsup_source_refreshes_total{source=\"2\",program=\"vault\",result=\"failed\"} 2\n",
            "agentsup_source_refresh_consecutive_failures{source=\"2\",program=\"vault\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
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
        let text = render(&Arc::new(sample()), 12.5, false, Format::OpenMetrics);
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
        let text = render(&Arc::new(sample()), 1.0, true, Format::Classic);
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
    fn every_state_has_a_series_and_only_the_current_one_is_1() {
        let status = Status {
            replicas: vec![replica("w", 0, StateKind::Exited)],
            ..Status::default()
        };
        let text = render(&Arc::new(status), 0.0, false, Format::OpenMetrics);
        for s in StateKind::ALL {
            let want = i64::from(s == StateKind::Exited);
            let line = format!(
                "agentsup_replica_state{{worker=\"w\",replica=\"0\",state=\"{s}\"}} {want}\n"
            );
            assert!(text.contains(&line), "{line} missing in {text}");
        }
    }
}
