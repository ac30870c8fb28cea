//! `check --probe` (SPEC 4): placeholder until the probe work lands.
use crate::check::Report;
use crate::plan::{Plan, WorkerPlan};
use crate::sources::{ProcessEnv, Snapshot};

/// Sends one authenticated request per distinct (provider, base URL, key) of
/// `workers` and adds a finding per result to `report`.
pub fn add_probe_findings(
    report: &mut Report,
    plan: &Plan,
    snapshot: &Snapshot,
    process_env: &ProcessEnv,
    workers: &[WorkerPlan],
) {
    let _ = (report, plan, snapshot, process_env, workers);
}
