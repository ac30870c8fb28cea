//! The command line (SPEC 1): clap definitions, and the glue that turns arguments
//! into library calls. No policy lives here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::check;
use crate::exit::{Error, Result, code};
use crate::plan::{self, Plan};
use crate::sources::{self, Captured, CommandRunner, LoadContext, ProcessEnv, Snapshot};

/// agentsup: supervise AI-agent workers with checked secrets, explicit environments,
/// redacted logs and recovery from rejected keys.
#[derive(Debug, Parser)]
#[command(name = "agentsup", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, then start and supervise every worker in the foreground.
    Run(RunArgs),
    /// Load the config and every source, run every check, print a report; starts nothing.
    Check(CheckArgs),
    /// Print the exact environment replica 0 of WORKER would get, with provenance.
    Env(EnvArgs),
    /// Run one command with a built environment and init duties (signal forwarding,
    /// zombie reaping); exit with its status.
    Exec(ExecArgs),
    /// Show the replicas of a running `agentsup run` (over its control socket).
    Status(StatusArgs),
    /// Restart a worker (every replica, one at a time) or one replica `NAME.N`.
    Restart(RestartArgs),
    /// Re-read and re-check every source, as SIGHUP does; restart what changed.
    Reload(ReloadArgs),
}

/// `agentsup status`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 done; 1 refused, or no `agentsup run` is serving this config; 78 config file not found."
)]
pub struct StatusArgs {
    #[command(flatten)]
    /// Config file of the running supervisor.
    pub config: ConfigArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

/// `agentsup restart`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 done; 1 refused, or no `agentsup run` is serving this config; 78 config file not found."
)]
pub struct RestartArgs {
    #[command(flatten)]
    /// Config file of the running supervisor.
    pub config: ConfigArg,
    /// `NAME` or `NAME.N`.
    pub target: String,
}

/// `agentsup reload`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 done; 1 refused, or no `agentsup run` is serving this config; 78 config file not found."
)]
pub struct ReloadArgs {
    #[command(flatten)]
    /// Config file of the running supervisor.
    pub config: ConfigArg,
}

/// `-c FILE`, shared by every subcommand.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Config file [default: $AGENTSUP_CONFIG, else ./supervisor.toml].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `agentsup run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Config file.
    pub config: ConfigArg,
    /// Start only this worker (repeatable).
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
    /// Output format [default: `[supervisor] log_format`, else pretty].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Never colour the output (NO_COLOR is honoured too).
    #[arg(long)]
    pub no_color: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// `planner.0 | text`.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `agentsup check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    /// Config file.
    pub config: ConfigArg,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Never colour the report.
    #[arg(long)]
    pub no_color: bool,
    /// Also send one authenticated request per distinct (provider, base URL, key)
    /// and report accepted, rejected or unreachable.
    #[arg(long)]
    pub probe: bool,
}

/// `check --format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    /// For people.
    Text,
    /// For machines.
    Json,
}

/// `agentsup env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    /// Config file.
    pub config: ConfigArg,
    /// The worker.
    pub worker: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: EnvFormat,
    /// Print secret values in clear (the only command that ever does).
    #[arg(long)]
    pub reveal: bool,
}

/// `env --format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum EnvFormat {
    /// An aligned table.
    Text,
    /// `{"NAME": {"value", "source", "secret"}}`.
    Json,
    /// `NAME=value` lines.
    Dotenv,
}

/// `agentsup exec`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["worker", "keys"])))]
pub struct ExecArgs {
    #[command(flatten)]
    /// Config file.
    pub config: ConfigArg,
    /// Build the environment of this worker.
    #[arg(long)]
    pub worker: Option<String>,
    /// Build an environment holding these keys (comma-separated; globs allowed).
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Pass the command's stdout and stderr through untouched instead of
    /// replacing the secrets it prints by `[redacted:NAME]`.
    #[arg(long)]
    pub no_masking: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Check(a) => cmd_check(a),
        Command::Env(a) => cmd_env(a),
        Command::Exec(a) => cmd_exec(a),
        Command::Run(a) => crate::supervisor::cmd_run(a),
        Command::Status(a) => crate::control::cmd_status(a),
        Command::Restart(a) => crate::control::cmd_restart(a),
        Command::Reload(a) => crate::control::cmd_reload(a),
    }
}

/// Loads the plan named by `-c` / `$AGENTSUP_CONFIG` / `./supervisor.toml`.
pub fn load_plan(arg: &ConfigArg) -> Result<Plan> {
    let env_value = std::env::var("AGENTSUP_CONFIG").ok();
    let (path, origin) = plan::locate(arg.config.as_deref(), env_value.as_deref());
    Plan::load(&path).map_err(|e| match e {
        Error::ConfigNotFound(msg) if origin == plan::ConfigOrigin::Default => {
            Error::ConfigNotFound(format!(
                "{msg}\n  hint: no supervisor.toml here ({}); pass -c FILE or set AGENTSUP_CONFIG",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ))
        }
        Error::ConfigNotFound(msg) if origin == plan::ConfigOrigin::EnvVar => {
            Error::ConfigNotFound(format!(
                "{msg} (from $AGENTSUP_CONFIG)\n  hint: fix AGENTSUP_CONFIG, or pass -c FILE"
            ))
        }
        Error::ConfigNotFound(msg) => {
            Error::ConfigNotFound(format!("{msg}\n  hint: check the path given to -c"))
        }
        other => other,
    })
}

/// Runs `command` sources through [`crate::spawn::run_capture`]: directly where no
/// reaper exists (`check`, `env`, `exec`), through the reaper in `run`.
pub struct SpawnRunner(pub Option<crate::reaper::ReaperHandle>);

impl CommandRunner for SpawnRunner {
    fn run(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        timeout: Duration,
    ) -> std::result::Result<Captured, String> {
        let out = crate::spawn::run_capture(argv, env, cwd, timeout, self.0.as_ref())
            .map_err(|e| e.to_string())?;
        let (code, signal) = match out.status {
            crate::reaper::Termination::Exited(c) => (Some(c), None),
            crate::reaper::Termination::Signaled(s) => (None, Some(s)),
        };
        Ok(Captured {
            code,
            signal,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// Loads every source once, and registers every value that could reach a worker
/// as secret with the global redactor, before anything is printed.
pub fn load_sources(plan: &Plan, process_env: &ProcessEnv) -> Snapshot {
    let snap = sources::load_all(
        plan,
        &LoadContext {
            process_env,
            runner: &SpawnRunner(None),
        },
    );
    register_secrets(plan, &snap, process_env);
    snap
}

/// Adds to the global redactor: the secret values of every key a worker declares
/// (exact or glob), every `*_FILE` value (a key pasted in place of a path), and
/// agentsup's own credential-looking variables. Reports, errors and logs printed
/// afterwards are redacted with them (SPEC 7: agentsup's own messages too).
pub fn register_secrets(plan: &Plan, snap: &Snapshot, process_env: &ProcessEnv) {
    let mut pairs = Vec::new();
    for (name, e) in snap
        .values
        .iter()
        .chain(snap.overridden.iter().map(|e| (&e.name, e)))
    {
        let declared = plan.workers.iter().any(|w| w.declares(name));
        if (declared && plan.is_secret(name, e.provenance.is_secret_source()))
            || name.ends_with("_FILE")
            || crate::secret::name_looks_secret(name)
        {
            pairs.push((name.clone(), e.value.clone()));
        }
        for password in crate::redact::url_password_forms(e.value.expose()) {
            pairs.push((name.clone(), crate::secret::Sensitive::new(password)));
        }
    }
    for (name, v) in &process_env.vars {
        if crate::secret::name_looks_secret(name) {
            pairs.push((name.clone(), v.clone()));
        }
        for password in crate::redact::url_password_forms(v.expose()) {
            pairs.push((name.clone(), crate::secret::Sensitive::new(password)));
        }
    }
    crate::redact::global().extend(pairs);
}

/// Colour only on a terminal, and never with `--no-color` or `NO_COLOR` set.
pub fn want_color(no_color: bool) -> bool {
    !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

fn cmd_check(a: CheckArgs) -> Result<u8> {
    let plan = load_plan(&a.config)?;
    let penv = ProcessEnv::capture();
    let snap = load_sources(&plan, &penv);
    let mut report = check::run(&plan, &snap, &penv, &[]);
    for (worker, problem) in
        crate::supervisor::preflight_problems(&plan, &plan.workers, &snap, &penv)
    {
        report.findings.push(check::Finding {
            severity: sources::Severity::Error,
            code: "command",
            key: None,
            workers: vec![worker],
            location: None,
            message: problem,
            hint: None,
        });
    }
    if a.probe {
        crate::probe::add_probe_findings(&mut report, &plan, &snap, &penv, &plan.workers);
    }
    let text = match a.format {
        ReportFormat::Text => report.render_text(want_color(a.no_color)),
        ReportFormat::Json => report.render_json(),
    };
    write_stdout(&crate::redact::redact_message(&text))?;
    Ok(if report.has_errors() {
        code::CONFIG
    } else {
        code::OK
    })
}

fn cmd_env(a: EnvArgs) -> Result<u8> {
    let plan = load_plan(&a.config)?;
    let Some(worker) = plan.worker(&a.worker) else {
        return Err(Error::Usage(unknown_worker(&plan, &a.worker)));
    };
    let penv = ProcessEnv::capture();
    let snap = load_sources(&plan, &penv);
    let built = crate::env::build(&plan, worker, 0, &snap, &penv);
    let text = crate::env_report::render(&built, a.format, a.reveal, &plan);
    write_stdout(&text)?;
    let mut problems: Vec<String> = snap
        .problems
        .iter()
        .filter(|p| p.severity == sources::Severity::Error)
        .map(|p| format!("{}: {}", p.location, p.message))
        .collect();
    for k in &built.missing {
        problems.push(format!(
            "{k}, declared by worker {:?}, is not set by any source; run `agentsup check` for details",
            worker.name
        ));
    }
    if problems.is_empty() {
        Ok(code::OK)
    } else {
        let mut err = std::io::stderr().lock();
        for p in &problems {
            let _ = writeln!(err, "agentsup: error: {}", crate::redact::redact_message(p));
        }
        Ok(code::CONFIG)
    }
}

fn cmd_exec(a: ExecArgs) -> Result<u8> {
    let plan = load_plan(&a.config)?;
    let penv = ProcessEnv::capture();
    let worker = match &a.worker {
        Some(name) => plan
            .worker(name)
            .cloned()
            .ok_or_else(|| Error::Usage(unknown_worker(&plan, name)))?,
        None => {
            if let Some(bad) = a.keys.iter().find(|k| !plan::is_name_or_glob(k)) {
                return Err(Error::Usage(format!(
                    "--keys: {bad:?} is not a variable name or glob (letters, digits, `_`; globs may use `*`, `?`, `[…]`)"
                )));
            }
            crate::env::adhoc_worker(&plan, "exec", &a.keys)
        }
    };
    let snap = load_sources(&plan, &penv);
    let report = check::run(&plan, &snap, &penv, std::slice::from_ref(&worker));
    if report.has_errors() {
        let text = crate::redact::redact_message(&report.render_text(false));
        let _ = std::io::stderr().write_all(text.as_bytes());
        return Err(Error::Validation(
            "checks failed; nothing was started".into(),
        ));
    }
    let built = crate::env::build(&plan, &worker, 0, &snap, &penv);
    crate::redact::global().extend(built.secrets());
    let cwd = if a.worker.is_some() {
        worker.cwd.clone()
    } else {
        std::env::current_dir().unwrap_or_else(|_| plan.config_dir.clone())
    };
    let mask = (!a.no_masking).then(|| crate::redact::global().current());
    let status = match crate::exec::run_exec(&a.cmd, built.pairs(), &cwd, mask) {
        Ok(status) => status,
        // As a shell and `env` do: 127 for "not found", 126 for "cannot run".
        Err(
            e @ (crate::spawn::SpawnError::NotFound { .. }
            | crate::spawn::SpawnError::NoPath { .. }
            | crate::spawn::SpawnError::Missing { .. }),
        ) => {
            eprintln!("agentsup: error: exec: {e}");
            return Ok(127);
        }
        Err(e @ crate::spawn::SpawnError::NotExecutable { .. }) => {
            eprintln!("agentsup: error: exec: {e}");
            return Ok(126);
        }
        Err(e) => return Err(Error::Runtime(format!("exec: {e}"))),
    };
    Ok(u8::try_from(status).unwrap_or(code::FAILURE))
}

/// "unknown worker X; the config defines: a, b".
pub fn unknown_worker(plan: &Plan, name: &str) -> String {
    let names: Vec<&str> = plan.workers.iter().map(|w| w.name.as_str()).collect();
    let close = names
        .iter()
        .filter(|n| strsim::jaro_winkler(n, name) > 0.8)
        .copied()
        .collect::<Vec<_>>();
    let mut msg = format!(
        "unknown worker {name:?}; {} defines: {}",
        plan.config_path.display(),
        if names.is_empty() {
            "(no workers)".to_string()
        } else {
            names.join(", ")
        }
    );
    if let Some(c) = close.first() {
        msg.push_str(&format!(" (did you mean {c:?}?)"));
    }
    msg
}

/// Writes to stdout, treating a closed pipe (`agentsup check | head`) as success.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Runtime(format!("cannot write to stdout: {e}"))),
    }
}
