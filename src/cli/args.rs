//! The clap definitions of every subcommand, and their conversion into the
//! library's own option types: nothing below `cli` knows clap exists.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::stdout::ReportFormat;

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
    /// Write a commented supervisor.toml for this directory from what it holds (.env,
    /// /run/secrets, Procfile, supervisord or PM2 files, or `-- COMMAND`), then check it.
    Init(InitArgs),
}

/// `agentsup init`.
#[derive(Debug, Args)]
#[command(
    after_help = "Reads .env (key names only, never values), /run/secrets, a Procfile, supervisord [program:x] files \
and PM2 ecosystem files in the config's directory.\n\
Examples:\n  agentsup init\n  agentsup init -- celery -A proj worker --concurrency=4\n\n\
Exit status: 0 written and checked; 1 nothing to run or the file exists; 78 written, but the check found errors."
)]
pub struct InitArgs {
    /// Where to write the config (its directory is the one searched).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "supervisor.toml"
    )]
    pub path: PathBuf,
    /// Replace an existing config.
    #[arg(long)]
    pub force: bool,
    /// The secret directory to look at.
    #[arg(long, value_name = "DIR", default_value = "/run/secrets")]
    pub secrets_dir: PathBuf,
    /// Do not color the check report.
    #[arg(long)]
    pub no_color: bool,
    /// A worker command to supervise (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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
    pub format: ReportFormatArg,
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
    pub format: ReportFormatArg,
    /// Never colour the report.
    #[arg(long)]
    pub no_color: bool,
    /// Also send one authenticated request per distinct (provider, base URL, key)
    /// and report accepted, rejected or unreachable.
    #[arg(long)]
    pub probe: bool,
}

/// `check --format`, `status --format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormatArg {
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
    pub format: EnvFormatArg,
    /// Print secret values in clear (the only command that ever does).
    #[arg(long)]
    pub reveal: bool,
    /// Never colour the output (accepted like every other command; `env` prints
    /// no colour today).
    #[arg(long)]
    pub no_color: bool,
}

/// `env --format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum EnvFormatArg {
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

impl ConfigArg {
    /// The `-c` path, if given.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

impl From<ReportFormatArg> for ReportFormat {
    fn from(f: ReportFormatArg) -> Self {
        match f {
            ReportFormatArg::Text => ReportFormat::Text,
            ReportFormatArg::Json => ReportFormat::Json,
        }
    }
}

impl From<EnvFormatArg> for crate::env_report::Format {
    fn from(f: EnvFormatArg) -> Self {
        match f {
            EnvFormatArg::Text => crate::env_report::Format::Text,
            EnvFormatArg::Json => crate::env_report::Format::Json,
            EnvFormatArg::Dotenv => crate::env_report::Format::Dotenv,
        }
    }
}

impl From<LogFormatArg> for crate::config::LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Pretty => crate::config::LogFormat::Pretty,
            LogFormatArg::Json => crate::config::LogFormat::Json,
        }
    }
}

impl RunArgs {
    /// The library's options for `agentsup run`.
    pub(crate) fn into_options(self) -> crate::supervisor::RunOptions {
        crate::supervisor::RunOptions {
            config: self.config.config,
            only: self.only,
            log_format: self.log_format.map(Into::into),
            color: crate::output::stdout::want_color(self.no_color),
        }
    }
}
