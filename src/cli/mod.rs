//! The command line (SPEC 1): clap definitions (`args.rs`), and the glue that turns
//! arguments into library calls for `check`, `env` and `exec`. No policy lives
//! here; nothing below this module imports it.

mod args;

use std::io::Write;

pub use args::*;

use crate::exit::{Error, Result, code};
use crate::output::stdout::{ReportFormat, want_color, write_stdout};
use crate::plan;
use crate::sources::ProcessEnv;
use crate::validate::{self, Scope, SpawnRunner, Validation};

/// The lines `main` prints to stderr for an error that ended a command: the
/// message redacted, its first line (and any that is not indented) after
/// `agentsup: error: `, indented detail lines as they are, each wrapped to the
/// terminal (or `$COLUMNS`) with its continuation indented under it.
pub fn error_lines(e: &Error) -> Vec<String> {
    const HEAD: &str = "agentsup: error: ";
    let text = crate::redact::redact_message(&e.to_string());
    let width = crate::output::width::stderr_width();
    let mut out = Vec::new();
    for line in text.lines() {
        let (head, body) = if line.starts_with(' ') {
            ("", line)
        } else {
            (HEAD, line)
        };
        let indent = body.len() - body.trim_start().len() + 4;
        let pieces = crate::output::width::wrap(body, width, head.len(), indent);
        for (i, piece) in pieces.iter().enumerate() {
            out.push(if i == 0 {
                format!("{head}{piece}")
            } else {
                piece.to_string()
            });
        }
    }
    out
}

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Check(a) => cmd_check(a),
        Command::Env(a) => cmd_env(a),
        Command::Exec(a) => cmd_exec(a),
        Command::Run(a) => crate::supervisor::cmd_run(a.into_options()),
        Command::Status(a) => crate::control::cmd_status(a.config.path(), a.format.into()),
        Command::Restart(a) => crate::control::cmd_restart(a.config.path(), &a.target),
        Command::Reload(a) => crate::control::cmd_reload(a.config.path()),
        Command::Init(a) => cmd_init(a),
    }
}

fn cmd_init(a: InitArgs) -> Result<u8> {
    let dir = match a.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let request = crate::init::InitRequest {
        dir: dir.clone(),
        secrets_dir: a.secrets_dir,
        command: a.command,
    };
    // Through main's one error printer (redacted, exit 1), like every command.
    let failed = |e: crate::init::InitError| Error::Failed(e.into());
    // An existing config is the first thing to say, whatever else is missing
    // (write_config still creates the file exclusively: this is only the order).
    if !a.force && std::fs::symlink_metadata(&a.path).is_ok() {
        return Err(failed(crate::init::InitError::Exists {
            path: a.path.display().to_string(),
        }));
    }
    let draft = crate::init::discover(&request).map_err(failed)?;
    crate::init::write_config(&a.path, &draft.render(), a.force).map_err(failed)?;
    let names: Vec<&str> = draft.workers.iter().map(|w| w.name.as_str()).collect();
    eprintln!(
        "agentsup init: wrote {} ({} worker(s): {}); checking it now",
        a.path.display(),
        names.len(),
        names.join(", ")
    );
    cmd_check(CheckArgs {
        config: ConfigArg {
            config: Some(a.path),
        },
        format: ReportFormatArg::Text,
        probe: false,
        no_color: a.no_color,
    })
}

fn cmd_check(a: CheckArgs) -> Result<u8> {
    let plan = plan::load_located(a.config.path())?;
    let penv = ProcessEnv::capture();
    let Validation { report, probes, .. } = validate::validate(
        &plan,
        &penv,
        &SpawnRunner(None),
        crate::redact::global(),
        Scope {
            workers: &[],
            preflight: true,
            probe: a.probe.then_some(crate::probe::DEFAULT_TIMEOUT),
        },
    );
    // On stderr: the report has no place for accepted keys, and stdout stays the
    // report alone (one JSON document with `--format json`). A closed stderr must
    // not stop the check.
    let mut err = std::io::stderr().lock();
    for r in &probes {
        let line = crate::redact::redact_message(&crate::probe::summary_line(r));
        let _ = writeln!(err, "{line}");
    }
    drop(err);
    let text = match ReportFormat::from(a.format) {
        ReportFormat::Text => {
            report.render_text_width(want_color(a.no_color), crate::output::width::stdout_width())
        }
        ReportFormat::Json => report.render_json(),
    };
    write_stdout(&crate::redact::redact_message(&text))?;
    Ok(if report.has_errors() {
        code::CONFIG
    } else {
        code::OK
    })
}

/// What `agentsup run` adds to a worker's environment that `env` cannot show
/// (paths made per run): issue 14's key files and notify socket.
fn run_only_notes(worker: &crate::plan::WorkerPlan) -> String {
    let mut out = String::new();
    if worker.on_rotation.writes_files() {
        out.push_str(&format!(
            "note: on_rotation = \"{}\": under `agentsup run` it also gets AGENTSUP_KEYS_DIR and NAME_FILE for each key (files in a directory made per run)\n",
            worker.on_rotation.as_str()
        ));
    }
    if worker
        .ready
        .as_ref()
        .is_some_and(|r| matches!(r.probe, crate::ready::Probe::Notify))
    {
        out.push_str(
            "note: ready = { notify = true }: under `agentsup run` it also gets NOTIFY_SOCKET\n",
        );
    }
    out
}

fn cmd_env(a: EnvArgs) -> Result<u8> {
    let plan = plan::load_located(a.config.path())?;
    let worker = plan.require_worker(&a.worker)?;
    let penv = ProcessEnv::capture();
    let snap = validate::load(
        &plan,
        &penv,
        &SpawnRunner(None),
        crate::redact::global(),
        std::slice::from_ref(worker),
    );
    let built = crate::env::build(&plan, worker, 0, &snap, &penv);
    let format: crate::env_report::Format = a.format.into();
    let mut text = crate::env_report::render(
        &built,
        format,
        a.reveal,
        &plan,
        crate::output::width::stdout_width(),
    );
    if format == crate::env_report::Format::Text {
        text.push_str(&run_only_notes(worker));
    }
    write_stdout(&text)?;
    let mut problems: Vec<String> = snap
        .problems
        .iter()
        .filter(|p| p.severity == crate::diag::Severity::Error)
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
    let plan = plan::load_located(a.config.path())?;
    let penv = ProcessEnv::capture();
    let worker = match &a.worker {
        Some(name) => plan.require_worker(name)?.clone(),
        None => {
            if let Some(bad) = a.keys.iter().find(|k| !plan::is_name_or_glob(k)) {
                return Err(Error::BadKeyPattern(bad.clone()));
            }
            crate::env::adhoc_worker(&plan, "exec", &a.keys)
        }
    };
    let Validation {
        snapshot: snap,
        report,
        ..
    } = validate::validate(
        &plan,
        &penv,
        &SpawnRunner(None),
        crate::redact::global(),
        Scope {
            workers: std::slice::from_ref(&worker),
            preflight: false,
            probe: None,
        },
    );
    if report.has_errors() {
        let text = crate::redact::redact_message(&report.render_text(false));
        let _ = std::io::stderr().write_all(text.as_bytes());
        return Err(Error::ChecksFailed);
    }
    let built = crate::env::build(&plan, &worker, 0, &snap, &penv);
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
            e @ (crate::process::SpawnError::NotFound { .. }
            | crate::process::SpawnError::NoPath { .. }
            | crate::process::SpawnError::Missing { .. }),
        ) => {
            eprintln!("agentsup: error: exec: {e}");
            return Ok(127);
        }
        Err(e @ crate::process::SpawnError::NotExecutable { .. }) => {
            eprintln!("agentsup: error: exec: {e}");
            return Ok(126);
        }
        Err(e) => return Err(Error::Exec(e.into())),
    };
    Ok(u8::try_from(status).unwrap_or(code::FAILURE))
}
