//! The `agentsup` binary: parse the command line, run, map errors to exit codes.
//! Everything printed here passes the global redactor first (SPEC 7).

#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // First, while single-threaded: copy the environment, then wipe the values
    // that look secret out of the process's environment block, which
    // `/proc/PID/environ` (`ps e`) shows to root (issue 12; see sys::environ).
    agentsup::sources::ProcessEnv::capture_at_start();
    agentsup::sys::environ::wipe_values(agentsup::redact::variable_looks_secret);
    // Before anything else: a stop signal or SIGHUP arriving from here on stays
    // pending until `run` has its handlers, or another command releases it.
    agentsup::signals::hold_early();
    // Before anything else, and before `run` forks the guard (which inherits it):
    // no process of our uid may read agentsup's memory or environment, and no core
    // file is written (issue 12; see sys::seal). Workers are exec'd and get neither.
    for problem in agentsup::sys::seal::seal() {
        eprintln!("agentsup: warning: {problem}");
    }
    agentsup::redact::install_panic_hook();
    let cli = agentsup::cli::Cli::parse();
    if !matches!(cli.command, agentsup::cli::Command::Run(_)) {
        agentsup::signals::release_early();
    }
    match agentsup::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            for line in agentsup::cli::error_lines(&e) {
                eprintln!("{line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
