//! Start-up and tear-down of `agentsup run`: the order that makes it a correct
//! container PID 1, and the last sweep for leftover children.

use std::sync::Arc;

use crate::config::LogFormat;
use crate::control;
use crate::exit::{Error, Result, code};
use crate::output::stdout::write_stdout;
use crate::output::{Format, OutputConfig, OutputSink};
use crate::plan::WorkerPlan;
use crate::process::Spawner;
use crate::reaper::Reaper;
use crate::signals::Signals;
use crate::sources::ProcessEnv;
use crate::validate::{self, Scope, SpawnRunner, Validation};

/// What `agentsup run` was asked to do.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    /// `-c FILE`; else `$AGENTSUP_CONFIG`, else `./supervisor.toml`.
    pub config: Option<std::path::PathBuf>,
    /// `--only NAME`: start only these workers (all when empty).
    pub only: Vec<String>,
    /// `--log-format`; else `[supervisor] log_format`.
    pub log_format: Option<LogFormat>,
    /// Colour pretty output (decided by the caller: a terminal, no `NO_COLOR`).
    pub color: bool,
}

/// `agentsup run`.
pub(crate) fn cmd_run(a: RunOptions) -> Result<u8> {
    // Signal handlers before the guard fork and the config (crate::signals).
    let signals = Signals::install().map_err(|e| Error::startup("install signal handlers", e))?;
    // First, while agentsup is one thread and has loaded no secret source (see
    // crate::guard); its warning, if any, waits for logging to be set up.
    let guard_warning = crate::guard::start().err();
    limit_malloc_arenas();
    let plan = crate::plan::load_located(a.config.as_deref())?;
    for name in &a.only {
        plan.require_worker(name)?;
    }
    let workers: Vec<WorkerPlan> = plan
        .workers
        .iter()
        .filter(|w| a.only.is_empty() || a.only.contains(&w.name))
        .cloned()
        .collect();
    if workers.is_empty() {
        return Err(Error::NoWorkers {
            config: plan.config_path.clone(),
        });
    }
    let format = a.log_format.unwrap_or(plan.supervisor.log_format);
    let color = a.color;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("agentsup")
        .build()
        .map_err(|e| Error::startup("start the async runtime", e))?;
    let result = runtime.block_on(run(
        Arc::new(plan),
        workers,
        format,
        color,
        guard_warning,
        signals,
    ));
    // Blocking tasks still running (a source re-read waiting on a hung command, a
    // source command killed by a stop signal: super::early_stop) must not hold up
    // the exit: its deadline has passed by now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
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
        .map_err(|e| Error::startup("start the signal thread", e))?;
    let reaper = Reaper::start().map_err(|e| Error::startup("become a child subreaper", e))?;
    let spawner = Spawner::start(reaper.clone())
        .map_err(|e| Error::startup("start the spawner thread", e))?;
    let process_env = Arc::new(ProcessEnv::capture());
    // Bind the control socket and the health port before anything starts, so a
    // second `agentsup run` on this config, or a port clash, stops here.
    let control_listener = control::bind(&plan.config_path)
        .await
        .map_err(Error::ControlSocket)?;
    let health_listener = match &plan.supervisor.health {
        Some(addr) => {
            Some(
                crate::health::bind(addr)
                    .await
                    .map_err(|cause| Error::HealthAddress {
                        addr: addr.to_string(),
                        config: plan.config_path.clone(),
                        cause,
                    })?,
            )
        }
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
        width: crate::output::width::stdout_width(),
    })
    .map_err(|e| Error::startup("start the output writer", e))?;
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
    // The one validation pipeline (crate::validate), off the async threads: a
    // `command` source and a probe block. Preflight is part of it, so a command
    // that cannot start is in the report, and no "ok" is printed for a config that
    // is then refused.
    let shutdown_timeout = plan.supervisor.shutdown_timeout;
    let Validation {
        snapshot,
        report,
        probes,
    } = {
        let (plan, penv, reaper, workers) = (
            plan.clone(),
            process_env.clone(),
            reaper.clone(),
            workers.clone(),
        );
        let task = tokio::task::spawn_blocking(move || {
            validate::validate(
                &plan,
                &penv,
                &SpawnRunner(Some(reaper)),
                crate::redact::global(),
                Scope {
                    workers: &workers,
                    preflight: true,
                    // One authenticated request per distinct (provider, base URL,
                    // key), before anything starts (SPEC 4).
                    probe: plan
                        .supervisor
                        .probe
                        .then_some(crate::probe::DEFAULT_TIMEOUT),
                },
            )
        });
        // A stop signal during a slow or hanging `command` source ends the run
        // now (its process group is killed), not after the source's timeout.
        match super::early_stop::during(task, &mut signals, shutdown_timeout, "loading the sources")
            .await
        {
            Ok(v) => v.map_err(|e| Error::startup("validate the config (the task failed)", e))?,
            Err(code) => {
                sink.shutdown().await;
                return Ok(code);
            }
        }
    };
    for r in &probes {
        eprintln!(
            "{}",
            crate::redact::redact_message(&crate::probe::summary_line(r))
        );
    }
    let rendered = match format {
        LogFormat::Pretty => report.render_text_width(color, crate::output::width::stdout_width()),
        LogFormat::Json => format!(
            "{}\n",
            serde_json::json!({
                "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "worker": "agentsup",
                "level": if report.has_errors() { "error" } else { "info" },
                "event": "check",
                "report": report.to_json(),
            })
        ),
    };
    // A full disk (ENOSPC) or EIO on stdout must not stop the workers from
    // starting: the sink copes with a failing stdout from here on.
    if let Err(e) = write_stdout(&crate::redact::redact_message(&rendered)) {
        eprintln!("agentsup: {e}; starting anyway (output is retried as it comes)");
    }
    if report.has_errors() {
        return Err(Error::ChecksFailed);
    }
    let redactor = crate::redact::global().clone();
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
                return Err(Error::Preload {
                    worker: w.name.clone(),
                    cause: e.into(),
                });
            }
        }
    }
    // Key files of `on_rotation = "file"`/`"signal"` workers, private to this run;
    // the guard removes them if agentsup is killed.
    let keys = match crate::keys_dir::KeysDir::create(&workers) {
        Ok(Some((dir, warning))) => {
            if let Some(w) = warning {
                tracing::warn!("{w}");
            }
            crate::guard::remove_on_death(dir.root());
            Some(dir)
        }
        Ok(None) => None,
        Err(e) => {
            drop(templates);
            sink.shutdown().await;
            return Err(Error::Startup {
                what: "set up the key files",
                cause: e.into(),
                nothing_started: true,
            });
        }
    };
    let shutdown_timeout = plan.supervisor.shutdown_timeout;
    let (code, mut signals) = super::supervise(super::RunContext {
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
        keys,
    })
    .await?;
    crate::guard::finish();
    // Every worker is gone; what is left is writing their output. A slow reader is
    // waited for (nothing is lost), unless a stop signal comes: then stdout gets
    // shutdown_timeout like everything else.
    tokio::select! {
        () = sink.shutdown() => {}
        () = async {
            while !matches!(signals.next().await, crate::signals::SignalEvent::Shutdown(_)) {}
        } => {
            sink.abandon_at(std::time::Instant::now() + shutdown_timeout);
            sink.shutdown().await;
        }
    }
    if code == code::FAILURE {
        return Err(Error::WorkerFailed);
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
        // Called first thing in `run`, before the runtime starts its threads.
        crate::sys::process::set_malloc_arena_max(1);
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
