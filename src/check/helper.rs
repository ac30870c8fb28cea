//! Checks of `command` sources as processes: a credential on the helper's command
//! line is readable by every local user through `/proc/<pid>/cmdline` while it
//! runs, however well agentsup hides its output.

use crate::diag::Finding;
use crate::diag::Severity;
use crate::plan::{Plan, SourceKindPlan};

/// Flag names that announce a credential, lower-cased.
const CREDENTIAL_WORDS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "api-key",
    "api_key",
    "credential",
    "private-key",
    "private_key",
];

/// Flag name endings that name where a credential is, not the credential.
const POINTER_SUFFIXES: &[&str] = &["file", "path", "env", "stdin", "helper", "id"];

/// One `helper-argv` warning per `command` source whose argv carries a credential.
pub(super) fn findings(plan: &Plan) -> Vec<Finding> {
    let mut out = Vec::new();
    for source in &plan.sources {
        let SourceKindPlan::Command { argv, .. } = &source.kind else {
            continue;
        };
        let flags = credential_args(argv);
        if flags.is_empty() {
            continue;
        }
        out.push(Finding {
            severity: Severity::Warning,
            code: "helper-argv",
            key: None,
            workers: Vec::new(),
            location: Some(format!(
                "{} source #{}",
                plan.config_path.file_name().map_or_else(
                    || plan.config_path.display().to_string(),
                    |n| { n.to_string_lossy().into_owned() }
                ),
                source.index + 1
            )),
            message: format!(
                "{} passes a credential on its command line ({}): any local user can read it \
                 in /proc/<pid>/cmdline while the command runs",
                source.describe(),
                flags.join(", ")
            ),
            hint: Some(
                "give it through the environment instead: list the variable in the source's \
                 `env` (e.g. env = [\"VAULT_TOKEN\"]), or point the tool at a file"
                    .into(),
            ),
        });
    }
    out
}

/// The flags of `argv` that carry a credential, shown as `--token …` or
/// `-token=…`; never the value.
fn credential_args(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, arg) in argv.iter().enumerate().skip(1) {
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("authorization:") || lower.starts_with("bearer ") {
            out.push("an Authorization header".to_string());
            continue;
        }
        let Some(flag) = arg.strip_prefix('-') else {
            continue;
        };
        let dashes = if flag.starts_with('-') { "--" } else { "-" };
        let flag = flag.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let name_lower = name.to_ascii_lowercase();
        if !CREDENTIAL_WORDS.iter().any(|w| name_lower.contains(w))
            || POINTER_SUFFIXES.iter().any(|s| name_lower.ends_with(s))
        {
            continue;
        }
        match inline {
            Some(v) if !v.is_empty() => out.push(format!("{dashes}{name}=…")),
            Some(_) => {}
            None => {
                if argv.get(i + 1).is_some_and(|next| !next.starts_with('-')) {
                    out.push(format!("{dashes}{name} …"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_that_carry_a_credential_are_named_without_the_value() {
        let found = credential_args(&args(&[
            "vault",
            "kv",
            "get",
            "-token=hvs.SECRETVALUE",
            "--password",
            "hunter2-long",
            "--api-key=abc",
            "-H",
            "Authorization: Bearer abc",
            "secret/agents",
        ]));
        assert_eq!(
            found,
            [
                "-token=…",
                "--password …",
                "--api-key=…",
                "an Authorization header"
            ]
        );
        assert!(!found.join(" ").contains("SECRETVALUE"));
    }

    #[test]
    fn paths_switches_and_positional_words_are_not_credentials() {
        let found = credential_args(&args(&[
            "vault",
            "kv",
            "get",
            "-format=json",
            "secret/agents",
            "--token-file",
            "/run/token",
            "--secret-id-file=/x",
            "--no-password",
            "--token",
            "--other",
            "-token=",
        ]));
        assert!(found.is_empty(), "{found:?}");
    }
}
