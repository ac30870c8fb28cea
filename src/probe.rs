//! `check --probe` (SPEC 4): one authenticated request per distinct (provider,
//! base URL, key value), reporting accepted, rejected (401/403) or unreachable.
//!
//! Which variables are probed, per selected worker (replica 0 of its built
//! environment, the environment the worker would really get):
//!
//! - a variable with `[keys.X] provider = "openai" | "anthropic"`, whatever its name;
//! - otherwise `OPENAI_API_KEY` and `ANTHROPIC_API_KEY`, the names the SDKs read.
//!   Other names that merely look like a provider's (`OPENAI_ADMIN_KEY`) are not
//!   probed: an admin or project-scoped key may legitimately be refused by
//!   `/models`, and a false "rejected" would stop `run`.
//! - Azure OpenAI (`AZURE_OPENAI_API_KEY` or `provider = "azure-openai"`) and Google
//!   (`GOOGLE_API_KEY`, `GEMINI_API_KEY`, … or `provider = "google"`) are listed as
//!   skipped: their endpoints need a deployment or answer a bad key with 400, so a
//!   probe would say little the shape checks do not already say.
//! - `provider = "none"` switches a key's probe off.
//!
//! The base URL is the worker's `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` (blank
//! counts as unset), else the provider's default: a key only ever goes to the host
//! its SDK would send it to. Redirects are never followed, so a key cannot be
//! carried to another host. OpenAI is asked `GET {base}/models` with
//! `Authorization: Bearer`, Anthropic `GET {base}/v1/models` with `x-api-key` and
//! `anthropic-version`. Requests run on a few threads with a timeout each.
//!
//! Nothing here ever prints a value: findings and summary lines hold key names,
//! provenance, URLs without user info or query, status codes and the provider's
//! error *code* (a short identifier such as `invalid_api_key`), never the body,
//! which for OpenAI echoes part of the key. Error strings from the HTTP client go
//! through the global redactor, which learns every probed value first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::Provider;
use crate::diag::Finding;
use crate::diag::Severity;
use crate::env::{self, BuiltEnv};
use crate::plan::{Plan, WorkerPlan};
use crate::secret::Sensitive;

/// How long one probe may take, connection and answer together.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many probes run at once: enough for a config's handful of keys,
/// few enough not to look like a burst to a provider's rate limiter.
pub(crate) const MAX_PARALLEL: usize = 8;

/// Only the error code is wanted from a 401/403 body; a larger body is not an API
/// error and is not read.
const MAX_BODY: u64 = 64 * 1024;

const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The providers a key can belong to, as far as probing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ProbeProvider {
    /// OpenAI or an OpenAI-compatible server (`OPENAI_BASE_URL`).
    OpenAi,
    /// Anthropic (`ANTHROPIC_BASE_URL`).
    Anthropic,
    /// Azure OpenAI: not probed.
    AzureOpenAi,
    /// Google AI: not probed.
    Google,
}

impl ProbeProvider {
    /// The name people know it by.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ProbeProvider::OpenAi => "OpenAI",
            ProbeProvider::Anthropic => "Anthropic",
            ProbeProvider::AzureOpenAi => "Azure OpenAI",
            ProbeProvider::Google => "Google",
        }
    }

    /// The variable its SDK reads the base URL from, and the default.
    fn base(self) -> Option<(&'static str, &'static str)> {
        match self {
            ProbeProvider::OpenAi => Some(("OPENAI_BASE_URL", OPENAI_DEFAULT_BASE)),
            ProbeProvider::Anthropic => Some(("ANTHROPIC_BASE_URL", ANTHROPIC_DEFAULT_BASE)),
            ProbeProvider::AzureOpenAi | ProbeProvider::Google => None,
        }
    }

    /// The path appended to the base URL. Anthropic's base has no `/v1` (the SDK
    /// adds it); OpenAI's has.
    fn models_path(self) -> &'static str {
        match self {
            ProbeProvider::Anthropic => "/v1/models",
            _ => "/models",
        }
    }
}

/// One key name, from one place, used with a probe target by some workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyUse {
    /// The variable, e.g. `OPENAI_API_KEY`.
    pub key: String,
    /// Where its value came from (`.env:2`, `process env`, …).
    pub location: String,
    /// Where the base URL came from: `OPENAI_BASE_URL from worker vars`, or `the
    /// OpenAI default`.
    pub base_source: String,
    /// The selected workers that get this key from there.
    pub workers: Vec<String>,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx: the provider accepts the key.
    Accepted {
        /// The HTTP status.
        status: u16,
    },
    /// 401 or 403: the provider refuses the key.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The provider's error code or type (`invalid_api_key`,
        /// `authentication_error`), when the body had a plain one.
        code: Option<String>,
    },
    /// No usable answer: DNS, connection, TLS, timeout, a 5xx, a bad URL.
    Unreachable {
        /// Why, already redacted.
        reason: String,
    },
    /// An answer that says nothing about the key: 404, 429, a redirect, …
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// What it probably means.
        reason: String,
    },
    /// Not probed, and why.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// The result of probing one distinct (provider, base URL, key value).
#[derive(Debug, Clone)]
pub(crate) struct ProbeResult {
    /// The provider.
    pub provider: ProbeProvider,
    /// The base URL, for display: no user info, query or fragment, redacted.
    /// Empty when the provider is not probed.
    pub base_url: String,
    /// The request, for display: `GET https://api.openai.com/v1/models`.
    pub request: String,
    /// Every key name and source that carries this value to this base URL.
    pub uses: Vec<KeyUse>,
    /// What happened.
    pub outcome: Outcome,
    /// How long the request took (zero when none was sent).
    pub elapsed: Duration,
}

impl ProbeResult {
    /// `KEY (worker a)` or `KEY, OTHER (workers a, b)`: who this result is about.
    fn who(&self) -> String {
        let mut keys: Vec<&str> = Vec::new();
        let mut workers: Vec<&str> = Vec::new();
        for u in &self.uses {
            if !keys.contains(&u.key.as_str()) {
                keys.push(&u.key);
            }
            for w in &u.workers {
                if !workers.contains(&w.as_str()) {
                    workers.push(w);
                }
            }
        }
        let label = if workers.len() == 1 {
            "worker"
        } else {
            "workers"
        };
        format!("{} ({label} {})", keys.join(", "), workers.join(", "))
    }
}

/// One distinct (provider, base URL, value), before it is probed.
struct Target {
    provider: ProbeProvider,
    /// The base URL as configured, trimmed, without trailing `/`.
    base: String,
    value: Sensitive,
    uses: Vec<KeyUse>,
    /// Decided before sending anything: not probed, or known unreachable.
    verdict: Option<Outcome>,
}

/// Probes every distinct (provider, base URL, key value) of the selected workers'
/// environments ([`env::for_workers`]), with `timeout` per request.
/// Results come in a stable order (first worker, then variable name).
pub(crate) fn probe(
    plan: &Plan,
    envs: &[env::WorkerEnv<'_>],
    timeout: Duration,
) -> Vec<ProbeResult> {
    let mut targets: Vec<Target> = Vec::new();
    for (w, built) in envs {
        collect(plan, w, built, &mut targets);
    }
    // Teach the redactor every value before a request can fail: client errors are
    // printed, and nothing printed may carry a key.
    crate::redact::global().extend(
        targets
            .iter()
            .flat_map(|t| t.uses.iter().map(|u| (u.key.clone(), t.value.clone()))),
    );
    run_all(targets, timeout)
}

/// The findings for `results`: `probe-rejected` (error) per rejected key,
/// `probe-unreachable` and `probe-unexpected` (warnings) when a key could not be
/// checked. Accepted and skipped keys give no finding (see [`summary_line`]).
pub(crate) fn findings(results: &[ProbeResult]) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in results {
        for u in &r.uses {
            let base = format!("base URL {} ({})", r.base_url, u.base_source);
            let (severity, code, message, hint) = match &r.outcome {
                Outcome::Accepted { .. } | Outcome::Skipped { .. } => continue,
                Outcome::Rejected { status, code } => (
                    Severity::Error,
                    "probe-rejected",
                    format!(
                        "{} rejected {}: {} answered {status}{}",
                        r.provider.label(),
                        u.key,
                        r.request,
                        code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
                    ),
                    format!(
                        "{base}; the key is revoked, rotated, mistyped, or meant for another account or \
                         base URL: replace the value at {}",
                        u.location
                    ),
                ),
                Outcome::Unreachable { reason } => (
                    Severity::Warning,
                    "probe-unreachable",
                    format!("{} could not be checked: {}: {reason}", u.key, r.request),
                    format!(
                        "{base}; check it and the network (HTTPS_PROXY and NO_PROXY apply); the key \
                         itself was not verified"
                    ),
                ),
                Outcome::Unexpected { status, reason } => (
                    Severity::Warning,
                    "probe-unexpected",
                    format!(
                        "{} could not be checked: {} answered {status}: {reason}",
                        u.key, r.request
                    ),
                    format!("{base}; the key itself was neither accepted nor rejected"),
                ),
            };
            out.push(Finding {
                severity,
                code,
                key: Some(u.key.clone()),
                workers: u.workers.clone(),
                location: Some(u.location.clone()),
                message,
                hint: Some(hint),
            });
        }
    }
    out
}

/// One line per result for people and logs, e.g. `probe: OPENAI_API_KEY (worker
/// planner) accepted by OpenAI: GET https://api.openai.com/v1/models answered 200
/// in 182ms`. Never holds a value.
pub(crate) fn summary_line(r: &ProbeResult) -> String {
    let who = r.who();
    let label = r.provider.label();
    let took = format!("{}ms", r.elapsed.as_millis());
    match &r.outcome {
        Outcome::Accepted { status } => format!(
            "probe: {who} accepted by {label}: {} answered {status} in {took}",
            r.request
        ),
        Outcome::Rejected { status, code } => format!(
            "probe: {who} REJECTED by {label}: {} answered {status}{} in {took}",
            r.request,
            code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        Outcome::Unreachable { reason } => format!(
            "probe: {who} not checked: {} unreachable: {reason}",
            r.request
        ),
        Outcome::Unexpected { status, reason } => format!(
            "probe: {who} not checked: {} answered {status}: {reason}",
            r.request
        ),
        Outcome::Skipped { reason } => format!("probe: {who} skipped: {reason}"),
    }
}

/// The provider of variable `name`: `[keys.X] provider` first, else the SDK names.
fn provider_of(plan: &Plan, name: &str) -> Option<ProbeProvider> {
    match plan.key_rules.get(name).and_then(|r| r.provider) {
        Some(Provider::Openai) => Some(ProbeProvider::OpenAi),
        Some(Provider::Anthropic) => Some(ProbeProvider::Anthropic),
        Some(Provider::AzureOpenai) => Some(ProbeProvider::AzureOpenAi),
        Some(Provider::Google) => Some(ProbeProvider::Google),
        Some(Provider::None) => None,
        None => match name {
            "OPENAI_API_KEY" => Some(ProbeProvider::OpenAi),
            "ANTHROPIC_API_KEY" => Some(ProbeProvider::Anthropic),
            "AZURE_OPENAI_API_KEY" => Some(ProbeProvider::AzureOpenAi),
            "GOOGLE_API_KEY" | "GEMINI_API_KEY" | "GOOGLE_GENERATIVE_AI_API_KEY" => {
                Some(ProbeProvider::Google)
            }
            _ => None,
        },
    }
}

/// Adds worker `w`'s probe targets to `targets`, merging with those already there.
fn collect(plan: &Plan, w: &WorkerPlan, built: &BuiltEnv, targets: &mut Vec<Target>) {
    for (name, var) in &built.vars {
        let Some(provider) = provider_of(plan, name) else {
            continue;
        };
        let value = var.value.expose();
        // Missing and empty keys already have their own findings.
        if value.trim().is_empty() {
            continue;
        }
        let (base, base_source, verdict) = match provider.base() {
            Some((var_name, default)) => {
                let (base, source) = match built
                    .vars
                    .get(var_name)
                    .filter(|v| !v.value.expose().trim().is_empty())
                {
                    Some(b) => (
                        b.value.expose().trim().to_string(),
                        format!("{var_name} from {}", b.provenance),
                    ),
                    None => (
                        default.to_string(),
                        format!("the {} default", provider.label()),
                    ),
                };
                let base = base.trim_end_matches('/').to_string();
                let verdict = precheck(&base, value, name);
                (base, source, verdict)
            }
            None => (
                String::new(),
                String::new(),
                Some(Outcome::Skipped {
                    reason: format!("{} keys are not probed", provider.label()),
                }),
            ),
        };
        let location = var.provenance.to_string();
        let existing = targets
            .iter_mut()
            .find(|t| t.provider == provider && t.base == base && t.value.expose() == value);
        let target = match existing {
            Some(t) => t,
            None => {
                targets.push(Target {
                    provider,
                    base,
                    value: var.value.clone(),
                    uses: Vec::new(),
                    verdict,
                });
                targets.last_mut().expect("just pushed")
            }
        };
        match target
            .uses
            .iter_mut()
            .find(|u| u.key == *name && u.location == location && u.base_source == base_source)
        {
            Some(u) => {
                if !u.workers.contains(&w.name) {
                    u.workers.push(w.name.clone());
                }
            }
            None => target.uses.push(KeyUse {
                key: name.clone(),
                location,
                base_source,
                workers: vec![w.name.clone()],
            }),
        }
    }
}

/// Reasons not to send a request at all.
fn precheck(base: &str, value: &str, key: &str) -> Option<Outcome> {
    let lower = base.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Some(Outcome::Unreachable {
            reason: "the base URL is not an http:// or https:// URL".into(),
        });
    }
    // An OpenAI-style request to an Azure resource says nothing useful, and the
    // check already reports the key/endpoint mismatch.
    let host = host_of(&lower);
    if [
        ".openai.azure.com",
        ".cognitiveservices.azure.com",
        ".services.ai.azure.com",
    ]
    .iter()
    .any(|s| host.ends_with(s))
    {
        return Some(Outcome::Skipped {
            reason: "the base URL is an Azure OpenAI resource, which is not probed".into(),
        });
    }
    // The HTTP client would refuse the header anyway; saying why is clearer, and
    // the check already has a finding for the stray characters.
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Some(Outcome::Skipped {
            reason: format!(
                "the value of {key} holds characters an HTTP header cannot carry (see the check's findings)"
            ),
        });
    }
    None
}

/// The host part of an absolute URL (after `scheme://` and any user info).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map_or(v6, |(h, _)| h);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

/// `url` without user info, query or fragment, redacted: fit for a report.
fn display_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    };
    crate::redact::global().redact_str(&shown)
}

/// Probes every target, at most [`MAX_PARALLEL`] at once, keeping their order.
fn run_all(targets: Vec<Target>, timeout: Duration) -> Vec<ProbeResult> {
    let to_send = targets.iter().filter(|t| t.verdict.is_none()).count();
    let mut outcomes: Vec<Option<(Outcome, Duration)>> = targets
        .iter()
        .map(|t| t.verdict.clone().map(|v| (v, Duration::ZERO)))
        .collect();
    if to_send > 0 {
        let agent = agent(timeout);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..to_send.min(MAX_PARALLEL))
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(t) = targets.get(i) else { break };
                            if t.verdict.is_none() {
                                let started = Instant::now();
                                let outcome = send(&agent, t, timeout);
                                mine.push((i, outcome, started.elapsed()));
                            }
                        }
                        mine
                    })
                })
                .collect();
            for h in handles {
                // A panicked prober leaves its targets without an outcome; they
                // are reported as unreachable below rather than lost.
                for (i, outcome, took) in h.join().unwrap_or_default() {
                    outcomes[i] = Some((outcome, took));
                }
            }
        });
    }
    targets
        .into_iter()
        .zip(outcomes)
        .map(|(t, o)| {
            let (outcome, elapsed) = o.unwrap_or_else(|| {
                (
                    Outcome::Unreachable {
                        reason: "the probe failed internally".into(),
                    },
                    Duration::ZERO,
                )
            });
            let (base_url, request) = if t.base.is_empty() {
                (String::new(), String::new())
            } else {
                let url = format!("{}{}", t.base, t.provider.models_path());
                (display_url(&t.base), format!("GET {}", display_url(&url)))
            };
            ProbeResult {
                provider: t.provider,
                base_url,
                request,
                uses: t.uses,
                outcome,
                elapsed,
            }
        })
        .collect()
}

/// The HTTP client: one timeout for the whole exchange, no redirects (a key must
/// never follow one to another host), and 4xx/5xx returned as answers to classify.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("agentsup/", env!("CARGO_PKG_VERSION"), " (probe)"))
        .build()
        .into()
}

/// Sends one probe and classifies the answer.
fn send(agent: &ureq::Agent, t: &Target, timeout: Duration) -> Outcome {
    let url = format!("{}{}", t.base, t.provider.models_path());
    let req = agent.get(&url).header("accept", "application/json");
    let req = match t.provider {
        ProbeProvider::Anthropic => req
            .header("x-api-key", t.value.expose())
            .header("anthropic-version", ANTHROPIC_VERSION),
        _ => req.header("authorization", format!("Bearer {}", t.value.expose())),
    };
    match req.call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            match status {
                200..=299 => Outcome::Accepted { status },
                401 | 403 => {
                    let body = resp
                        .body_mut()
                        .with_config()
                        .limit(MAX_BODY)
                        .read_to_string()
                        .unwrap_or_default();
                    Outcome::Rejected {
                        status,
                        code: error_code(&body),
                    }
                }
                500..=599 => Outcome::Unreachable {
                    reason: format!("the server answered {status}"),
                },
                300..=399 => Outcome::Unexpected {
                    status,
                    reason: "a redirect, not followed (a key is only sent to its configured base \
                             URL): point the base URL at the final address"
                        .into(),
                },
                404 => Outcome::Unexpected {
                    status,
                    reason: match t.provider {
                        ProbeProvider::Anthropic => {
                            "no such endpoint: is the base URL right? (without /v1: the SDK adds it)"
                        }
                        _ => "no such endpoint: is the base URL right? (OpenAI-style base URLs usually end in /v1)",
                    }
                    .into(),
                },
                429 => Outcome::Unexpected {
                    status,
                    reason: "rate limited or out of quota: the key was not refused, but calls may fail"
                        .into(),
                },
                _ => Outcome::Unexpected {
                    status,
                    reason: "an answer that says nothing about the key".into(),
                },
            }
        }
        Err(e) => Outcome::Unreachable {
            reason: crate::redact::global().redact_str(&describe(&e, timeout)),
        },
    }
}

/// A client error in plain words.
fn describe(e: &ureq::Error, timeout: Duration) -> String {
    use std::io::ErrorKind;
    match e {
        ureq::Error::Timeout(_) => {
            format!("no answer within {}", humantime::format_duration(timeout))
        }
        ureq::Error::HostNotFound => "host not found (DNS)".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::BadUri(_) => "the base URL is not a valid URL".into(),
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => "connection refused".into(),
            ErrorKind::ConnectionReset => "connection reset".into(),
            ErrorKind::ConnectionAborted => "connection aborted".into(),
            ErrorKind::TimedOut => {
                format!("no answer within {}", humantime::format_duration(timeout))
            }
            ErrorKind::UnexpectedEof => "the server closed the connection without answering".into(),
            _ => io.to_string(),
        },
        other => other.to_string(),
    }
}

/// The provider's error code from a 401/403 body: OpenAI's `error.code` (else
/// `error.type`), Anthropic's `error.type`. Only a plain identifier is kept:
/// anything else in the body (OpenAI echoes part of the key) is not.
fn error_code(body: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    let err = doc.get("error")?;
    let candidates = [err.get("code"), err.get("type")];
    candidates
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .find(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_keeps_only_identifiers() {
        let openai = r#"{"error":{"message":"Incorrect API key provided: sk-proj-****WXYZ.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(error_code(openai).as_deref(), Some("invalid_api_key"));
        let anthropic = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(
            error_code(anthropic).as_deref(),
            Some("authentication_error")
        );
        assert_eq!(
            error_code(r#"{"error":{"code":"sk-abc leaked","type":null}}"#),
            None
        );
        assert_eq!(error_code("<html>nope</html>"), None);
    }

    #[test]
    fn display_url_drops_user_info_and_query() {
        assert_eq!(
            display_url("https://user:pw@example.com:8443/v1/models?key=abc#x"),
            "https://example.com:8443/v1/models"
        );
        assert_eq!(
            display_url("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1"
        );
    }

    #[test]
    fn host_of_handles_ports_user_info_and_ipv6() {
        assert_eq!(
            host_of("https://a:b@res.openai.azure.com:443/x"),
            "res.openai.azure.com"
        );
        assert_eq!(host_of("http://[::1]:80/v1"), "::1");
        assert_eq!(host_of("http://localhost"), "localhost");
    }

    #[test]
    fn precheck_refuses_what_must_not_be_sent() {
        assert!(matches!(
            precheck("ftp://x", "sk-a", "K"),
            Some(Outcome::Unreachable { .. })
        ));
        assert!(matches!(
            precheck("https://res.openai.azure.com/openai", "sk-a", "K"),
            Some(Outcome::Skipped { .. })
        ));
        assert!(matches!(
            precheck("https://api.openai.com/v1", "sk-a\n", "K"),
            Some(Outcome::Skipped { .. })
        ));
        assert_eq!(precheck("https://api.openai.com/v1", "sk-a", "K"), None);
    }
}
