//! Re-reading every source while workers run (auth failure, SIGHUP), off the
//! dispatcher's task: `command` sources block, and they go through the reaper.
//!
//! One re-read serves every replica waiting for it ("one incident, not N", SPEC 5).
//! New values are adopted only when they pass the same checks as at start-up;
//! otherwise the old values stay and nothing running is disturbed.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Input;
use crate::plan::{Plan, WorkerPlan};
use crate::reaper::ReaperHandle;
use crate::sources::{ProcessEnv, Snapshot};
use crate::validate::{self, Scope, SpawnRunner, Validation};

/// The result of one re-read.
pub(super) struct Outcome {
    /// The new snapshot, or why it was refused (value-free).
    pub result: Result<Snapshot, String>,
}

/// Starts a re-read; its [`Outcome`] arrives as [`Input::Reread`].
pub(super) fn start(
    plan: Arc<Plan>,
    workers: Vec<WorkerPlan>,
    process_env: Arc<ProcessEnv>,
    reaper: ReaperHandle,
    tx: mpsc::UnboundedSender<Input>,
) {
    tokio::task::spawn_blocking(move || {
        // The pipeline of start-up (crate::validate), so new values are registered
        // with the redactor before anything is reported and pass the same checks,
        // preflight included. No probe: a re-read follows an auth failure, which
        // the new value proves or disproves by itself.
        let Validation {
            snapshot: snap,
            report,
            ..
        } = validate::validate(
            &plan,
            &process_env,
            &SpawnRunner(Some(reaper)),
            crate::redact::global(),
            Scope {
                workers: &workers,
                preflight: true,
                probe: None,
            },
        );
        let result = if report.has_errors() {
            let reasons: Vec<String> = report
                .findings
                .iter()
                .filter(|f| f.severity == crate::diag::Severity::Error)
                .map(|f| match (&f.key, &f.location) {
                    (Some(k), Some(l)) => format!("{k} ({l}): {}", f.message),
                    (Some(k), None) => format!("{k}: {}", f.message),
                    (None, Some(l)) => format!("{l}: {}", f.message),
                    (None, None) => f.message.clone(),
                })
                .collect();
            Err(reasons.join("; "))
        } else {
            Ok(snap)
        };
        let _ = tx.send(Input::Reread(Box::new(Outcome { result })));
    });
}
