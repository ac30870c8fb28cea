//! Checks about a worker as a whole rather than one key: the Azure OpenAI endpoint
//! and API version its environment must hold, GOOGLE_API_KEY beside GEMINI_API_KEY,
//! and a `.env` in its working directory that agentsup does not read (SPEC 4).

use std::path::Path;

use super::provider::{self, Family, Host};
use super::{Ctx, Finding, expose, nonempty};
use crate::diag::Severity;
use crate::env::BuiltEnv;
use crate::plan::{SourceKindPlan, WorkerPlan};

impl Ctx<'_> {
    /// Azure OpenAI needs an https endpoint and an API version in the worker's own
    /// environment (secrets.md C.1: the AzureOpenAI client refuses to start
    /// without them).
    pub(super) fn azure_findings(&self, w: &WorkerPlan, built: &BuiltEnv) -> Vec<Finding> {
        let Some(subject) = w
            .keys_exact
            .iter()
            .find(|k| matches!(self.provider(k), Some((Family::AzureOpenAi, _))))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let finding = |code: &'static str,
                       key: &str,
                       location: Option<String>,
                       message: String,
                       hint: String| Finding {
            severity: Severity::Error,
            code,
            key: Some(key.to_string()),
            workers: vec![w.name.clone()],
            location,
            message,
            hint: Some(hint),
        };
        let endpoint = nonempty(built, "AZURE_OPENAI_ENDPOINT").or_else(|| {
            nonempty(built, "OPENAI_BASE_URL")
                .filter(|(_, v)| provider::classify_base_url(Some(v.value.expose())) == Host::Azure)
        });
        const SHAPE: &str = "https://<resource>.openai.azure.com";
        match endpoint {
            Some((name, var)) => {
                let loc = Some(var.provenance.to_string());
                match provider::parse_url(var.value.expose()) {
                    Some((scheme, _)) if scheme != "https" => out.push(finding(
                        "azure-endpoint",
                        name,
                        loc,
                        format!("{name} is not an https:// URL; Azure OpenAI only accepts https"),
                        format!("use the endpoint from the Azure portal (Keys and Endpoint), like {SHAPE}"),
                    )),
                    Some((_, host)) if host == "api.openai.com" => out.push(finding(
                        "azure-endpoint",
                        name,
                        loc,
                        format!("{name} points at OpenAI's own API, not at an Azure OpenAI resource"),
                        format!("use the endpoint of the Azure resource, like {SHAPE}"),
                    )),
                    Some(_) => {}
                    None => out.push(finding(
                        "azure-endpoint",
                        name,
                        loc,
                        format!("{name} is not a URL; Azure OpenAI endpoints look like {SHAPE}"),
                        "use the endpoint from the Azure portal (Keys and Endpoint)".to_string(),
                    )),
                }
            }
            None => out.push(finding(
                "azure-endpoint",
                "AZURE_OPENAI_ENDPOINT",
                None,
                format!(
                    "{subject} needs an Azure OpenAI endpoint, but AZURE_OPENAI_ENDPOINT is not in worker {}'s \
                     environment; the AzureOpenAI client stops with \"Must provide one of the `base_url` or \
                     `azure_endpoint` arguments\"",
                    w.name
                ),
                self.provide_hint(w, "AZURE_OPENAI_ENDPOINT", SHAPE),
            )),
        }
        // The v1 API (`…/openai/v1`, used with the plain OpenAI client) takes no
        // api-version; every other Azure call does.
        let v1 = ["AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL"]
            .iter()
            .any(|n| expose(built, n).is_some_and(|v| v.contains("/openai/v1")));
        if nonempty(built, "OPENAI_API_VERSION").is_none() && !v1 {
            out.push(finding(
                "azure-api-version",
                "OPENAI_API_VERSION",
                None,
                format!(
                    "{subject} needs an API version, but OPENAI_API_VERSION is not in worker {}'s environment; \
                     the AzureOpenAI client stops with \"Must provide either the `api_version` argument or the \
                     `OPENAI_API_VERSION` environment variable\"",
                    w.name
                ),
                self.provide_hint(w, "OPENAI_API_VERSION", "2024-10-21"),
            ));
        }
        out
    }

    /// A `.env` in the worker's working directory that agentsup does not load
    /// (SPEC 4): `load_dotenv()` or `dotenv.config()` in the worker would pull stale
    /// or undeclared values past agentsup.
    pub(super) fn worker_dotenv(&self, w: &WorkerPlan, built: &BuiltEnv) -> Option<Finding> {
        let file = w.cwd.join(".env");
        if !file.is_file() {
            return None;
        }
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let target = canon(&file);
        let is_source =
            self.plan.sources.iter().any(
                |s| matches!(&s.kind, SourceKindPlan::Dotenv { path } if canon(path) == target),
            );
        if is_source {
            return None;
        }
        let shown = file
            .strip_prefix(&self.plan.config_dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| file.clone());
        // python-dotenv ≥ 1.2 treats these as "disabled".
        let disabled = expose(built, "PYTHON_DOTENV_DISABLED").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "t" | "yes" | "y"
            )
        });
        let hint = if disabled {
            "agentsup sets PYTHON_DOTENV_DISABLED=1 in this worker, which stops python-dotenv ≥ 1.2 but not \
             older python-dotenv or Node's dotenv: delete or move the file, or list it as a [[source]]"
        } else {
            "python-dotenv is not disabled in this worker ([env] worker_dotenv = true, or its `vars`), so \
             load_dotenv() will read the file: delete or move it, or list it as a [[source]]"
        };
        Some(Finding {
            severity: Severity::Warning,
            code: "worker-dotenv",
            key: None,
            workers: vec![w.name.clone()],
            location: Some(shown.display().to_string()),
            message: format!(
                "worker {}'s working directory holds a .env that is not one of agentsup's sources; a worker \
                 that calls load_dotenv() or dotenv.config() would load stale or undeclared values past agentsup",
                w.name
            ),
            hint: Some(hint.to_string()),
        })
    }
}

/// google-genai silently prefers GOOGLE_API_KEY when both are set, the deprecated
/// google-generativeai prefers GEMINI_API_KEY (secrets.md C.2): two different
/// values mean two SDKs would use two keys.
pub(super) fn google_both(w: &WorkerPlan, built: &BuiltEnv) -> Option<Finding> {
    let (_, google) = nonempty(built, "GOOGLE_API_KEY")?;
    let (_, gemini) = nonempty(built, "GEMINI_API_KEY")?;
    if google.value == gemini.value {
        return None;
    }
    Some(Finding {
        severity: Severity::Warning,
        code: "provider-mismatch",
        key: Some("GOOGLE_API_KEY".to_string()),
        workers: vec![w.name.clone()],
        location: Some(google.provenance.to_string()),
        message: format!(
            "worker {} gets both GOOGLE_API_KEY and GEMINI_API_KEY (from {}) with different values: google-genai \
             uses GOOGLE_API_KEY, the deprecated google-generativeai uses GEMINI_API_KEY",
            w.name, gemini.provenance
        ),
        hint: Some("keep one of the two".to_string()),
    })
}

/// A worker's `stop_timeout` that the global shutdown cannot hold: agentsup
/// SIGKILLs whatever is left at 90 % of `shutdown_timeout`, so a worker still
/// finishing its task (a Celery warm shutdown) is killed before its own timeout,
/// and its task is lost (issue 14).
pub(super) fn stop_fits(plan: &crate::plan::Plan, w: &WorkerPlan) -> Option<Finding> {
    let shutdown = plan.supervisor.shutdown_timeout;
    let kill_at = crate::plan::kill_after(shutdown);
    // Only a stop_timeout the config sets: a shorter shutdown_timeout capping the
    // default grace is documented and deliberate (the demo's 5 s). A set
    // stop_timeout past the 90 % kill cannot do what it says.
    if !w.stop_timeout_set || w.stop_timeout <= kill_at {
        return None;
    }
    let needed =
        w.stop_timeout.mul_f64(1.0 / crate::plan::KILL_AT) + std::time::Duration::from_secs(1);
    Some(Finding {
        severity: Severity::Warning,
        code: "stop-timeout",
        key: None,
        workers: vec![w.name.clone()],
        location: Some(format!("{}:{}", plan.config_path.display(), w.line)),
        message: format!(
            "worker {}'s stop_timeout ({}) does not fit in [supervisor] shutdown_timeout ({}): at shutdown \
             agentsup SIGKILLs what is left after {}, before this worker's own grace ends",
            w.name,
            humantime::format_duration(w.stop_timeout),
            humantime::format_duration(shutdown),
            humantime::format_duration(
                std::time::Duration::from_millis(kill_at.as_millis() as u64)
            ),
        ),
        hint: Some(format!(
            "raise shutdown_timeout to at least {} (and keep it below your orchestrator's grace period)",
            humantime::format_duration(std::time::Duration::from_secs(needed.as_secs().max(1)))
        )),
    })
}
