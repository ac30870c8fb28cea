//! Fork mode (`start = "fork"`, SPEC 6): Python replicas forked from a preloaded,
//! secret-free template.
//!
//! # What happens
//!
//! For each fork-mode worker, agentsup starts **one template interpreter** through
//! the [`Spawner`] — so the template is registered with the reaper, sits in its own
//! process group and dies with agentsup (PDEATHSIG) like any worker. Its
//! environment is the worker's minus every secret (`template_env`): no declared
//! key (exact or glob), no `X_FILE` that feeds one, nothing [`crate::env`] marks
//! secret. It imports `preload` once, then serves fork requests over a Unix socket.
//! The Python side is `src/fork_template.py`, embedded in the binary, written to a
//! private 0700 directory for the interpreter to read and removed as soon as the
//! template has connected.
//!
//! For each replica run, [`ForkTemplate::fork`] creates the stdout/stderr pipes,
//! passes their write ends to the template with `SCM_RIGHTS` together with the
//! replica's full SPEC 3 environment, argv and cwd, and gets back the child's pid.
//! The child calls `setsid()` (own session, so its pid is its process group id),
//! arms `PR_SET_PDEATHSIG` (template death → child death), puts its pipes on fd
//! 1/2 and `/dev/null` on fd 0, **replaces `os.environ` entirely**, resets signal
//! dispositions to a fresh interpreter's, reseeds `random` (and numpy's global
//! generator), `chdir`s, sets `sys.argv`, and runs `module` (like `python -m`) or
//! `script` as `__main__`, exiting with the status python would: `SystemExit`
//! codes, 1 with the traceback for an uncaught exception, SIGINT for an uncaught
//! `KeyboardInterrupt`.
//!
//! # How agentsup learns pids and exit statuses
//!
//! Replicas are the **template's** children, not agentsup's, so the reaper cannot
//! wait for them. The template reports instead: it answers every fork request with
//! `{"pid": …}` only after the child is its own group leader (so agentsup can
//! signal the group the moment it knows the pid), reaps its children from a
//! SIGCHLD-driven main loop, and sends `{"exit": pid, "code" | "signal": …}` for
//! each. A pid stays reserved until the template reaps it, and agentsup signals a
//! replica's group only before that report, exactly as with spawned workers and
//! the reaper. The alternative — a double fork so replicas reparent to agentsup's
//! subreaper — was rejected: the pid would reach the reaper through the template,
//! after the child might already have exited, which is the registration race the
//! reaper's design forbids.
//!
//! If the template dies, the socket closes: every request in flight fails, every
//! replica not yet reported is SIGKILLed with its process group (it had PDEATHSIG
//! anyway; it is reparented to agentsup and reaped there as an orphan), and its
//! exit future resolves with [`ForkExitError::TemplateDied`], which a run reports
//! as a crash. The next fork — or, at once, a background restart — starts a new
//! template, with backoff while templates keep dying young.
//!
//! # Why the template has no secrets
//!
//! A client built at import time (`client = OpenAI()` at module level, a LangChain
//! `ChatOpenAI` in a module body) reads its key once. Built in a template that held
//! the key, every replica would inherit that key forever, including after a
//! rotation — the very bug agentsup exists to remove. Without a key the
//! construction fails loudly (`The api_key client option must be set`) or builds a
//! client that fails its first request, so the mistake shows up on the first run,
//! classified `config`, instead of weeks later. Clients built at run time read the
//! replica's own `os.environ` and get the right key; a rotation restarts the
//! replica with the new key without restarting the template.
//!
//! # When not to use fork mode
//!
//! * **Threads started at import time** (`preload` of a module that starts a
//!   background thread, a metrics exporter, a thread pool). `fork` copies only the
//!   forking thread; a lock another thread held stays locked in every replica. The
//!   template reports such threads and agentsup warns.
//! * **CUDA / GPU runtimes** (torch with CUDA initialised, TensorFlow, JAX). A
//!   CUDA context does not survive `fork`; initialise it in the replica.
//! * **Modules that open connections or sockets at import** (database pools, gRPC
//!   channels, an HTTP client with a keep-alive pool). Every replica would share the
//!   same socket. Create them at run time.
//! * **The worker's own module.** Preload libraries, never the code that builds
//!   clients from keys; `preflight` refuses `preload` containing `module`.
//! * Variables read by the interpreter at start-up (`PYTHONPATH`, `PYTHONHASHSEED`,
//!   `LD_PRELOAD`, …) come from the template's environment, which is the worker's
//!   minus its keys, so they match; a *secret* one cannot take effect.
//! * `/proc/<replica>/environ` (and `ps e`) shows the template's environment: the
//!   kernel records the environment at `exec`, and a forked replica never execs.
//!   `os.environ` in the replica is the right one.
//!
//! # Using it from a run
//!
//! [`Forked`] mirrors `crate::process::Spawned` (same `pid`, `stdout`, `stderr`),
//! and [`ForkExit`] resolves to the same `Result<ExitStatus, _>` as
//! `crate::reaper::ExitWaiter`, an error meaning "status unknown, treat as a
//! crash". A run starts a replica with `template.fork(env.pairs())` instead of
//! `spawner.spawn(spec)` and treats the result alike; it stops a replica by
//! signalling the group `pid`, as for spawned workers.
//!
//! Not here: building environments ([`crate::env`]), replica state ([`crate::replica`]),
//! output ([`crate::output`]).

mod conn;
mod prepare;
pub(crate) mod proto;
mod start;
mod types;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::env::BuiltEnv;
use crate::output::OutputSink;
use crate::plan::WorkerPlan;
use crate::process::{Spawner, kill_group};

use conn::{Conn, Death};
use start::StartParams;

pub(crate) use prepare::{preflight, template_env};
pub use types::{ForkError, ForkExit, ForkExitError, Forked, TemplateOptions};

/// The template program, shipped inside the binary.
pub(crate) const TEMPLATE_SOURCE: &str = include_str!("../fork_template.py");

/// The template of one fork-mode worker. Cheap to clone; every clone drives the
/// same template. When the last clone is dropped, the template and every replica
/// it forked are killed.
#[derive(Clone)]
pub struct ForkTemplate {
    inner: Arc<Inner>,
}

impl fmt::Debug for ForkTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForkTemplate")
            .field("worker", &self.inner.worker)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

struct Inner {
    worker: Arc<str>,
    python: String,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    cwd_str: String,
    preload: Vec<String>,
    module: Option<String>,
    script: Option<String>,
    /// `sys.argv` of every replica: the module or script, then `args`.
    argv: Vec<String>,
    spawner: Spawner,
    output: Option<OutputSink>,
    options: TemplateOptions,
    /// The live template, if any. An async mutex: it is held across a (re)start so
    /// that concurrent forks wait for one template instead of starting several.
    current: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Consecutive templates that died young or failed to start.
    failures: Mutex<u32>,
    starts: AtomicU64,
    closed: AtomicBool,
    /// The pid of the live template, readable without the async lock.
    pid: Mutex<Option<u32>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(conn) = self.current.get_mut().take() {
            conn.kill_now();
        }
    }
}

impl ForkTemplate {
    /// Starts the template of `worker` and waits until it has preloaded.
    ///
    /// `env` is a replica's built environment (any replica: the per-replica
    /// variables are dropped); the template gets [`template_env`] of it. The
    /// template's own output goes to `output` as supervisor events (or to
    /// `tracing` when `None`), redacted. A preload that fails to import is
    /// [`ForkError::Preload`], naming the module, with its traceback.
    pub(crate) async fn start(
        worker: &WorkerPlan,
        env: &BuiltEnv,
        spawner: &Spawner,
        output: Option<OutputSink>,
    ) -> Result<ForkTemplate, ForkError> {
        Self::start_with(worker, env, spawner, output, TemplateOptions::default()).await
    }

    /// `ForkTemplate::start` with explicit limits.
    pub async fn start_with(
        worker: &WorkerPlan,
        env: &BuiltEnv,
        spawner: &Spawner,
        output: Option<OutputSink>,
        options: TemplateOptions,
    ) -> Result<ForkTemplate, ForkError> {
        let fork = worker.fork.as_ref().ok_or(ForkError::NotForkMode)?;
        let cwd_str = worker
            .cwd
            .to_str()
            .ok_or_else(|| ForkError::NonUtf8 {
                what: "working directory",
                path: worker.cwd.clone(),
            })?
            .to_string();
        let script = match &fork.script {
            Some(p) => Some(
                p.to_str()
                    .ok_or_else(|| ForkError::NonUtf8 {
                        what: "script",
                        path: p.clone(),
                    })?
                    .to_string(),
            ),
            None => None,
        };
        let target = fork
            .module
            .clone()
            .or_else(|| script.clone())
            .unwrap_or_default();
        let argv = std::iter::once(target)
            .chain(fork.args.iter().cloned())
            .collect();
        let inner = Arc::new(Inner {
            worker: Arc::from(worker.name.as_str()),
            python: fork.python.clone(),
            env: template_env(worker, env),
            cwd: worker.cwd.clone(),
            cwd_str,
            preload: fork.preload.clone(),
            module: fork.module.clone(),
            script,
            argv,
            spawner: spawner.clone(),
            output,
            options,
            current: tokio::sync::Mutex::new(None),
            failures: Mutex::new(0),
            starts: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            pid: Mutex::new(None),
        });
        inner.connection().await?;
        Ok(ForkTemplate { inner })
    }

    /// Forks one replica with `env`, its complete environment (SPEC 3,
    /// [`BuiltEnv::pairs`]). If the template is dead it is restarted first
    /// (honouring the backoff). If this future is dropped before it resolves, a
    /// replica forked for it is killed rather than left unsupervised.
    pub async fn fork(&self, env: Vec<(String, String)>) -> Result<Forked, ForkError> {
        let inner = self.inner.clone();
        let (tx, rx) = oneshot::channel();
        // Its own task: a request half-written to the socket by a cancelled caller
        // would break the template for everyone.
        tokio::spawn(async move {
            let result = inner.fork(env).await.map(Unclaimed::new);
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(result) => result.map(Unclaimed::claim),
            Err(_) => Err(ForkError::TemplateDied),
        }
    }

    /// The live template's pid, if one is running.
    pub fn pid(&self) -> Option<u32> {
        *self
            .inner
            .pid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many template processes were started so far (1 + restarts).
    pub fn starts(&self) -> u64 {
        self.inner.starts.load(Ordering::Relaxed)
    }

    /// Stops the template for good: it kills any replica still running, exits,
    /// and is not restarted. Waits up to `grace`, then kills it. Call it after the
    /// replicas were stopped; later forks fail with [`ForkError::Closed`].
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let conn = self.inner.current.lock().await.take();
        if let Some(conn) = conn {
            conn.close(grace).await;
        }
        *self
            .inner
            .pid
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Inner {
    /// The live template, starting one (after the backoff delay) if needed.
    async fn connection(self: &Arc<Self>) -> Result<Arc<Conn>, ForkError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = &*current {
            if !conn.is_dead() {
                return Ok(conn.clone());
            }
            // A template that lived long enough was fine; one that died young
            // counts towards the backoff, like a crash-looping worker.
            let mut failures = self.failures();
            *failures = if conn.lived() >= self.options.reset_after {
                0
            } else {
                failures.saturating_add(1)
            };
        }
        *current = None;
        if self.closed.load(Ordering::SeqCst) {
            return Err(ForkError::Closed);
        }
        let delay = self.backoff_delay();
        if !delay.is_zero() {
            tracing::info!(
                "{}: restarting the fork template in {}",
                self.worker,
                humantime::format_duration(delay)
            );
            tokio::time::sleep(delay).await;
        }
        let weak = Arc::downgrade(self);
        let on_death = Box::new(move |death: Death| {
            if let Some(inner) = weak.upgrade() {
                inner.on_death(death);
            }
        });
        let started = start::start(
            StartParams {
                worker: self.worker.clone(),
                python: &self.python,
                env: &self.env,
                cwd: &self.cwd,
                config: proto::Config {
                    preload: &self.preload,
                    module: self.module.as_deref(),
                    script: self.script.as_deref(),
                },
                timeout: self.options.start_timeout,
                output: self.output.clone(),
            },
            &self.spawner,
            on_death,
        )
        .await;
        self.starts.fetch_add(1, Ordering::Relaxed);
        match started {
            Ok(conn) => {
                *self.pid.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.pid);
                *current = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let mut failures = self.failures();
                *failures = failures.saturating_add(1);
                Err(e)
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, u32> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn backoff_delay(&self) -> Duration {
        let n = *self.failures();
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 2f64.powi(n.saturating_sub(1).min(30) as i32);
        self.options
            .backoff_initial
            .mul_f64(factor)
            .min(self.options.backoff_max)
    }

    /// Runs on the reader task when a template went away.
    fn on_death(self: Arc<Self>, death: Death) {
        {
            let mut pid = self.pid.lock().unwrap_or_else(PoisonError::into_inner);
            if *pid == Some(death.pid) {
                *pid = None;
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let replicas = match death.replicas_killed {
            0 => String::new(),
            1 => "; its running replica was killed".to_string(),
            n => format!("; its {n} running replicas were killed"),
        };
        tracing::error!(
            "{}: the fork template (pid {}) {} after {}{replicas}; restarting it",
            self.worker,
            death.pid,
            start::describe(death.status),
            humantime::format_duration(Duration::from_secs(death.lived.as_secs()))
        );
        // Restart now, in the background, so the replicas' own restarts find a
        // warm template.
        tokio::spawn(async move {
            if let Err(e) = self.connection().await {
                tracing::error!(
                    "{}: {}",
                    self.worker,
                    crate::redact::global().redact_str(&e.to_string())
                );
            }
        });
    }

    async fn fork(self: Arc<Self>, env: Vec<(String, String)>) -> Result<Forked, ForkError> {
        // The replica's secrets: wiped when this returns, however it returns.
        let env = zeroize::Zeroizing::new(env);
        let conn = self.connection().await?;
        conn.fork(&self.argv, &self.cwd_str, &env, self.options.reply_timeout)
            .await
    }
}

/// A forked replica on its way to the caller: killed if nobody claims it (the
/// caller's future was dropped while the reply was in the channel).
struct Unclaimed(Option<Forked>);

impl Unclaimed {
    fn new(forked: Forked) -> Self {
        Unclaimed(Some(forked))
    }

    fn claim(mut self) -> Forked {
        self.0.take().expect("claimed once")
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(forked) = &self.0 {
            let _ = kill_group(forked.pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests;
