//! Criterion benchmarks for building the explicit environment of a replica (SPEC 3).
//!
//! The dispatcher calls `env::build` then `BuiltEnv::pairs` on every spawn, and
//! start-up calls `env::build` then `BuiltEnv::secrets` once per replica to seed the
//! redactor, so with many replicas this sits on both the restart path and the
//! time-to-first-spawn. Each build copies the whole environment (into a `BTreeMap`,
//! then into the pairs), which is cheap next to the fork; these benches are there to
//! keep it that way as the layering rules grow.
//!
//! The fixture is one worker with 1000 replicas that declares 10 exact keys and a
//! glob, over an `env` source holding about 215 variables, with 5 inherit patterns
//! and global and worker vars, so every layer of `env::build` does real work. The
//! values are synthetic and are never printed.
//!
//! Run with `cargo bench --bench env`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use agentsup::plan::Plan;
use agentsup::sources::{self, Captured, CommandRunner, LoadContext, ProcessEnv, Snapshot};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const REPLICAS: u32 = 1000;

/// Exact keys the worker declares; all are present in the source.
const EXACT_KEYS: usize = 10;

/// `load_all` needs a runner, but the fixture has only an `env` source: failing
/// loudly here is better than silently measuring a fixture that spawns processes.
struct NoCommands;

impl CommandRunner for NoCommands {
    fn run(
        &self,
        _argv: &[String],
        _env: &[(String, String)],
        _cwd: &Path,
        _timeout: Duration,
        _creds: Option<&agentsup::sys::creds::Creds>,
    ) -> Result<Captured, String> {
        Err("the env benchmark has no command sources".into())
    }
}

/// The plan and the captured environment it reads from. Most process variables
/// are noise the worker does not declare, because filtering them out is part of
/// the cost `env::build` pays in production.
fn fixture(replicas: u32) -> (Plan, ProcessEnv) {
    let mut pairs: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("NOISE_VAR_{i}"),
                format!("value-{i}-{}", "x".repeat(40)),
            )
        })
        .collect();
    for i in 0..EXACT_KEYS {
        pairs.push((
            format!("SERVICE_TOKEN_{i}"),
            format!("tok_{i}_{}", "s".repeat(32)),
        ));
    }
    pairs.push(("LANGSMITH_PROJECT".into(), "bench".into()));
    pairs.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    pairs.push(("HOME".into(), "/home/bench".into()));
    pairs.push(("LANG".into(), "C.UTF-8".into()));

    let keys: Vec<String> = (0..EXACT_KEYS)
        .map(|i| format!("\"SERVICE_TOKEN_{i}\""))
        .collect();
    let toml = format!(
        r#"
[env]
inherit = ["PATH", "HOME", "LANG", "LC_*", "TZ"]
vars = {{ LOG_LEVEL = "info", REGION = "eu" }}

[[source]]
type = "env"

[[worker]]
name = "planner"
command = ["python3", "-m", "agents.planner"]
replicas = {replicas}
keys = [{}, "LANGSMITH_*"]
vars = {{ MODEL = "gpt-4o-mini" }}
"#,
        keys.join(", ")
    );
    let plan = Plan::from_text(Path::new("/bench/supervisor.toml"), &toml)
        .expect("benchmark config is valid");
    (plan, ProcessEnv::from_pairs(pairs))
}

/// A fixture that quietly stopped resolving keys (a renamed source type, a changed
/// glob rule) would still benchmark, just something cheaper; check it once first.
fn assert_fixture_resolves(plan: &Plan, snapshot: &Snapshot, penv: &ProcessEnv) {
    assert!(!snapshot.has_errors(), "env source failed to load");
    let env = agentsup::env::build(plan, &plan.workers[0], 0, snapshot, penv);
    assert!(env.missing.is_empty(), "declared keys are missing");
    assert!(
        env.vars.contains_key("LANGSMITH_PROJECT"),
        "glob key absent"
    );
    assert!(
        !env.vars.contains_key("NOISE_VAR_0"),
        "undeclared key leaked"
    );
    // build+secrets measures nothing useful if the source's values stop counting
    // as secret.
    assert!(
        env.secrets().count() >= EXACT_KEYS,
        "source values not secret"
    );
}

fn env_construction(c: &mut Criterion) {
    let (plan, penv) = fixture(REPLICAS);
    let snapshot = sources::load_all(
        &plan,
        &LoadContext {
            process_env: &penv,
            runner: &NoCommands,
            redactor: &agentsup::redact::SharedRedactor::default(),
        },
    );
    assert_fixture_resolves(&plan, &snapshot, &penv);
    let worker = &plan.workers[0];

    // One replica on its own: the per-spawn cost a restart pays.
    let mut group = c.benchmark_group("env_one_replica");
    group.throughput(Throughput::Elements(1));
    group.bench_function("build+pairs", |b| {
        b.iter(|| {
            let env = agentsup::env::build(&plan, worker, black_box(7), &snapshot, &penv);
            env.pairs()
        });
    });
    group.finish();

    // Every replica of the worker: what start-up pays before the first spawn,
    // once on the spawn path and once to seed the redactor.
    let mut group = c.benchmark_group("env_all_replicas");
    group.throughput(Throughput::Elements(u64::from(REPLICAS)));
    group.bench_function(BenchmarkId::new("build+pairs", REPLICAS), |b| {
        b.iter(|| {
            for r in 0..REPLICAS {
                let env = agentsup::env::build(&plan, worker, r, &snapshot, &penv);
                black_box(env.pairs());
            }
        });
    });
    group.bench_function(BenchmarkId::new("build+secrets", REPLICAS), |b| {
        b.iter(|| {
            for r in 0..REPLICAS {
                let env = agentsup::env::build(&plan, worker, r, &snapshot, &penv);
                black_box(env.secrets().count());
            }
        });
    });
    group.finish();
}

criterion_group!(benches, env_construction);
criterion_main!(benches);
