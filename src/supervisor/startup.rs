//! Start-up and tear-down of `agentsup run`: the order that makes it a correct
//! container PID 1, and the last sweep for leftover children.

use std::sync::Arc;

use crate::check;
use crate::cli::{LogFormatArg, RunArgs, SpawnRunner, load_plan, unknown_worker, write_stdout};
use crate::config::LogFormat;
use crate::control;
use crate::exit::{Error, Result, code};
use crate::output::{Format, OutputConfig, OutputSink};
use crate::plan::WorkerPlan;
use crate::reaper::Reaper;
use crate::signals::Signals;
use crate::sources::{self, LoadContext, ProcessEnv};
use crate::spawn::Spawner;

/// `agentsup run`.
pub fn cmd_run(a: RunArgs) -> Result<u8> {
    // Signal handlers before the guard fork and the config (crate::signals).
    let signals = Signals::install()
        .map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    // First, while agentsup is one thread and has loaded no secret source (see
    // crate::guard); its warning, if any, waits for logging to be set up.
    let guard_warning = crate::guard::start().err();
    limit_malloc_arenas();
    let plan = load_plan(&a.config)?;
    for name in &a.only {
        if plan.worker(name).is_none() {
            return Err(Error::Usage(unknown_worker(&plan, name)));
        }
    }
    let workers: Vec<WorkerPlan> = plan
        .workers
        .iter()
        .filter(|w| a.only.is_empty() || a.only.contains(&w.name))
        .cloned()
        .collect();
    if workers.is_empty() {
        return Err(Error::Validation(format!(
            "{} defines no [[worker]]; add one with a name and a command",
            plan.config_path.display()
        )));
    }
    let format = match a.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Pretty) => LogFormat::Pretty,
        None => plan.supervisor.log_format,
    };
    let color = crate::cli::want_color(a.no_color);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("agentsup")
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(run(
        Arc::new(plan),
        workers,
        format,
        color,
        guard_warning,
        signals,
    ));
    // A blocking task may still wait on a source command killed by a stop signal
    // (super::early_stop); do not wait for it without bound.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn run(
    plan: Arc<crate::plan::Plan>,
    workers: Vec<WorkerPlan>,
    format: LogFormat,
    color: bool,
    guard_warning: Option<String>,
    signals: Signals,
) -> Result<u8> {
    // Installed in cmd_run; read from now on (the guard is forked).
    let mut signals = signals
        .start()
        .map_err(|e| Error::Runtime(format!("cannot start the signal thread: {e}")))?;
    let reaper = Reaper::start()
        .map_err(|e| Error::Runtime(format!("cannot become a child subreaper: {e}")))?;
    let spawner = Spawner::start(reaper.clone())
        .map_err(|e| Error::Runtime(format!("cannot start the spawner thread: {e}")))?;
    let process_env = Arc::new(ProcessEnv::capture());
    // Bind the control socket and the health port before anything starts, so a
    // second `agentsup run` on this config, or a port clash, stops here.
    let control_listener = control::bind(&plan.config_path)
        .await
        .map_err(Error::Validation)?;
    let health_listener = match &plan.supervisor.health {
        Some(addr) => Some(crate::health::bind(addr).await.map_err(|e| {
            Error::Validation(format!(
                "cannot listen on health address {addr} ([supervisor] health in {}): {e}",
                plan.config_path.display()
            ))
        })?),
        None => None,
    };

    // The output sink and the tracing layer come first, so that anything logged
    // from here on (watcher fallbacks, re-reads) is printed, redacted.
    let sink = OutputSink::stdout(OutputConfig {
        format: match format {
            LogFormat::Pretty => Format::Pretty,
            LogFormat::Json => Format::Json,
        },
        color,
        label_width: crate::output::label_width(
            workers.iter().map(|w| (w.name.as_str(), w.replicas)),
        ),
        workers: workers.iter().map(|w| w.name.clone()).collect(),
        redactor: crate::redact::global().clone(),
    })
    .map_err(|e| Error::Runtime(format!("cannot start the output writer: {e}")))?;
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(sink.layer());
        // Only `run` installs a subscriber, once per process.
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
    if let Some(w) = guard_warning {
        tracing::warn!("{w}");
    }
    // Watch before the first load, so a change during a slow `command` source is
    // not missed (it only causes one extra re-read).
    let (inputs_tx, inputs_rx) = tokio::sync::mpsc::unbounded_channel();
    let _watch_guard = start_watching(&plan, inputs_tx.clone());
    let snapshot = {
        let (p, penv, reaper) = (plan.clone(), process_env.clone(), reaper.clone());
        let load = tokio::task::spawn_blocking(move || {
            let runner = SpawnRunner(Some(reaper));
            sources::load_all(
                &p,
                &LoadContext {
                    process_env: &penv,
                    runner: &runner,
                },
            )
        });
        // A stop signal during a slow or hanging `command` source ends the run
        // now (its process group is killed), not after the source's timeout.
        let stop = super::early_stop::during(load, &mut signals, &plan, "loading the sources");
        match stop.await {
            Ok(snapshot) => {
                snapshot.map_err(|e| Error::Runtime(format!("loading sources failed: {e}")))?
            }
            Err(code) => {
                sink.shutdown().await;
                return Ok(code);
            }
        }
    };
    crate::cli::register_secrets(&plan, &snapshot, &process_env);
    let mut report = check::run(&plan, &snapshot, &process_env, &workers);
    if plan.supervisor.probe {
        // One authenticated request per distinct (provider, base URL, key), before
        // anything starts (SPEC 4); blocking HTTP, so off the async threads.
        let (p, s, e, w) = (
            plan.clone(),
            snapshot.clone(),
            process_env.clone(),
            workers.clone(),
        );
        let results = tokio::task::spawn_blocking(move || {
            crate::probe::probe(&p, &s, &e, &w, crate::probe::DEFAULT_TIMEOUT)
        })
        .await
        .map_err(|e| Error::Runtime(format!("probing keys failed: {e}")))?;
        for r in &results {
            eprintln!(
                "{}",
                crate::redact::redact_message(&crate::probe::summary_line(r))
            );
        }
        report.findings.extend(crate::probe::findings(&results));
    }
    let rendered = match format {
        LogFormat::Pretty => report.render_text(color),
        LogFormat::Json => {
            let v: serde_json::Value =
                serde_json::from_str(&report.render_json()).unwrap_or(serde_json::Value::Null);
            format!(
                "{}\n",
                serde_json::json!({
                    "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    "worker": "agentsup",
                    "level": if report.has_errors() { "error" } else { "info" },
                    "event": "check",
                    "report": v
                })
            )
        }
    };
    write_stdout(&crate::redact::redact_message(&rendered))?;
    if report.has_errors() {
        return Err(Error::Validation(
            "the checks above failed; nothing was started (fix them, then run again; `agentsup check` repeats the report)".into(),
        ));
    }

    preflight_commands(&plan, &workers, &snapshot, &process_env)?;
    let redactor = crate::redact::global().clone();
    for w in &workers {
        for r in 0..w.replicas {
            let env = crate::env::build(&plan, w, r, &snapshot, &process_env);
            redactor.extend(env.secrets());
        }
    }
    let (status_tx, status_rx) =
        tokio::sync::watch::channel(Arc::new(crate::status::Status::default()));
    // Control requests are forwarded into the dispatcher's input queue.
    let (control_tx, mut control_rx) = tokio::sync::mpsc::unbounded_channel();
    control::serve(control_listener, status_rx.clone(), control_tx);
    {
        let inputs = inputs_tx.clone();
        tokio::spawn(async move {
            while let Some((req, reply)) = control_rx.recv().await {
                if inputs.send(super::Input::Control(req, reply)).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(listener) = health_listener {
        crate::health::serve(listener, status_rx.clone());
    }
    // Fork-mode templates preload before any replica starts; a preload that fails
    // to import stops everything here (exit 78), like a failed check.
    let mut templates = Vec::with_capacity(workers.len());
    for w in &workers {
        if w.start != crate::config::StartMode::Fork {
            templates.push(None);
            continue;
        }
        let env = crate::env::build(&plan, w, 0, &snapshot, &process_env);
        match crate::fork::ForkTemplate::start(w, &env, &spawner, Some(sink.clone())).await {
            Ok(t) => templates.push(Some(t)),
            Err(e) => {
                drop(templates); // kills the templates already started
                sink.shutdown().await;
                return Err(Error::Validation(format!(
                    "worker {:?}: {e}\nnothing was started",
                    w.name
                )));
            }
        }
    }
    let code = super::supervise(super::RunContext {
        plan,
        workers,
        templates,
        process_env,
        snapshot: Arc::new(snapshot),
        signals,
        spawner,
        reaper,
        sink: sink.clone(),
        redactor,
        status_tx,
        inputs_tx,
        inputs_rx,
    })
    .await?;
    crate::guard::finish();
    sink.shutdown().await;
    if code == code::FAILURE {
        return Err(Error::Runtime(
            "a worker failed for good (see above)".into(),
        ));
    }
    Ok(code)
}

/// Caps glibc's malloc at one arena, unless the operator set `MALLOC_ARENA_MAX`
/// or `GLIBC_TUNABLES` themselves. Process-wide: a library caller of `run` gets
/// it too. glibc gives each thread that allocates its own
/// arena (up to 8 per core); agentsup's threads mostly hand small, short-lived
/// buffers around, so each arena held a few pages of fragments. Measured with
/// 200 workers: 0.3 MB less RSS, log throughput and restart latency unchanged.
/// Must run before the runtime's threads start. Other C libraries: nothing to do.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // SAFETY: mallopt only sets a tunable; called first thing in `run`, before
        // the runtime starts its threads.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// Kills every process still parented to us (orphans of workers, reparented to us
/// as subreaper or PID 1), so no process agentsup started survives it (SPEC 5).
pub fn kill_leftover_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let ppid = crate::procfs::stat_field(&pid.to_string(), 4);
        if ppid == Some(u64::from(me)) && !crate::guard::is_guard(pid) {
            let _ = crate::spawn::kill_pid(pid, libc::SIGKILL);
        }
    }
}

/// Watches every file and `dir` source; a change becomes
/// [`super::Input::SourcesChanged`]. A watcher that cannot start is reported and
/// the supervisor carries on (re-reads still happen on auth failures and SIGHUP).
fn start_watching(
    plan: &crate::plan::Plan,
    inputs: tokio::sync::mpsc::UnboundedSender<super::Input>,
) -> Option<crate::watch::WatchGuard> {
    let mut paths = Vec::new();
    for s in &plan.sources {
        match &s.kind {
            crate::plan::SourceKindPlan::Dotenv { path }
            | crate::plan::SourceKindPlan::Dir { path } => {
                paths.push(path.clone());
            }
            _ => {}
        }
    }
    if paths.is_empty() {
        return None;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    match crate::watch::start(paths, tx) {
        Ok(guard) => {
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    if inputs.send(super::Input::SourcesChanged).is_err() {
                        break;
                    }
                }
            });
            Some(guard)
        }
        Err(e) => {
            tracing::warn!(
                "cannot watch the sources for changes ({e}); rotations are still picked up on auth failures and SIGHUP"
            );
            None
        }
    }
}

/// Resolves every worker's command on the worker's own PATH and checks its `cwd`
/// before anything starts: a typo in `command` is a configuration error (exit 78),
/// not a crash loop that ends in `failed` minutes later.
fn preflight_commands(
    plan: &crate::plan::Plan,
    workers: &[WorkerPlan],
    snapshot: &crate::sources::Snapshot,
    process_env: &ProcessEnv,
) -> Result<()> {
    let problems: Vec<String> = preflight_problems(plan, workers, snapshot, process_env)
        .into_iter()
        .map(|(worker, problem)| format!("worker {worker:?}: {problem}"))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "{}\nnothing was started",
            problems.join("\n")
        )))
    }
}

/// Every worker whose command, interpreter, script or `cwd` cannot be used, as
/// `(worker, problem)`; shared by `run` (before anything starts) and `check`.
pub fn preflight_problems(
    plan: &crate::plan::Plan,
    workers: &[WorkerPlan],
    snapshot: &crate::sources::Snapshot,
    process_env: &ProcessEnv,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for w in workers {
        if !w.cwd.is_dir() {
            problems.push((
                w.name.clone(),
                format!(
                    "cwd {} is not a directory; fix `cwd` (relative paths start at {})",
                    w.cwd.display(),
                    plan.config_dir.display()
                ),
            ));
            continue;
        }
        let env = crate::env::build(plan, w, 0, snapshot, process_env);
        if w.start == crate::config::StartMode::Fork {
            if let Err(e) = crate::fork::preflight(w, &env) {
                problems.push((w.name.clone(), e.to_string()));
            }
            continue;
        }
        let Some(program) = w.command.first() else {
            continue;
        };
        if let Err(e) = crate::spawn::resolve_program(program, env.path_var(), &w.cwd) {
            let hint = if env.path_var().is_none() {
                "; add PATH to [env] inherit or to the worker's vars"
            } else {
                "; install it, give its full path, or fix PATH"
            };
            problems.push((w.name.clone(), format!("{e}{hint}")));
        }
    }
    problems
}
