//! The `agentsup` binary: parse the command line, run, map errors to exit codes.
//! Everything printed here passes the global redactor first (SPEC 7).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `agentsup run` re-executes itself as its guard (see `agentsup::guard`); not a
    // command for people, so not in the CLI.
    if std::env::args_os().nth(1).as_deref() == Some(agentsup::guard::GUARD_ARG.as_ref()) {
        return ExitCode::from(agentsup::guard::run_guard());
    }
    agentsup::redact::install_panic_hook();
    let cli = agentsup::cli::Cli::parse();
    match agentsup::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = agentsup::redact::redact_message(&e.to_string());
            let mut lines = text.lines();
            if let Some(first) = lines.next() {
                eprintln!("agentsup: error: {first}");
            }
            for line in lines {
                if line.starts_with(' ') {
                    eprintln!("{line}");
                } else {
                    eprintln!("agentsup: error: {line}");
                }
            }
            ExitCode::from(e.exit_code())
        }
    }
}
