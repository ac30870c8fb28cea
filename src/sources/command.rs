//! `command` sources: vault, op, sops, or any program that prints secrets.
//!
//! The command runs without a shell, with a minimal environment: the `[env]
//! inherit` set plus the variables the source lists in `env` (`VAULT_ADDR`,
//! `VAULT_TOKEN`), never agentsup's whole environment, which holds other workers'
//! keys. It has a timeout, and its stdout (a socket, which a same-uid process cannot
//! reopen through `/proc/<pid>/fd` as it can a pipe) is parsed as dotenv or as a
//! JSON object (under `json_pointer`).
//!
//! Every value the command printed (each dotenv value, each JSON string and
//! number anywhere in the document) is registered with the redactor as soon as it
//! is parsed, whether or not the command succeeded, and before anything about the
//! command is reported. A failure reports the exit status and the last lines of
//! stderr, redacted with those values and every value known so far, because a
//! failing secret tool may echo what it was given.
//!
//! How the process is started and waited for is behind [`CommandRunner`], because
//! `check` has no reaper while `run` must route every exit through its single
//! reaper (see [`crate::reaper`]).

use std::path::Path;
use std::time::Duration;

use super::dotenv::{self, Quote, RecordNote};
use super::{LoadContext, Severity, SourceProblem};
use crate::config::CommandFormat;
use crate::plan::is_var_name;
use crate::redact::Redactor;
use crate::secret::Sensitive;

/// What a finished command produced. `Debug` shows sizes only: the output of a
/// secret command is the secrets.
pub struct Captured {
    /// `Some(code)` for a normal exit, `None` when killed by a signal.
    pub code: Option<i32>,
    /// Signal number when killed.
    pub signal: Option<i32>,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

impl Drop for Captured {
    /// The output is the secrets: wiped, not just freed (issue 12).
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.stdout);
        zeroize::Zeroize::zeroize(&mut self.stderr);
    }
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured")
            .field("code", &self.code)
            .field("signal", &self.signal)
            .field("stdout", &format_args!("<{} bytes>", self.stdout.len()))
            .field("stderr", &format_args!("<{} bytes>", self.stderr.len()))
            .finish()
    }
}

/// Runs a command to completion; implemented over [`crate::process`].
pub trait CommandRunner: Sync {
    /// Runs `argv` in `cwd` with `env`, as the user and groups of `creds` (a
    /// source's `user`/`group`; agentsup's own when `None`), killing it after
    /// `timeout`. `Err` (a value-free sentence) when it could not be started,
    /// timed out or was lost.
    fn run(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        timeout: Duration,
        creds: Option<&crate::sys::creds::Creds>,
    ) -> Result<Captured, String>;
}

/// Settings of one command source.
pub struct CommandSpec<'a> {
    /// argv.
    pub argv: &'a [String],
    /// stdout format.
    pub format: CommandFormat,
    /// JSON pointer.
    pub json_pointer: Option<&'a str>,
    /// Timeout.
    pub timeout: Duration,
    /// Working directory (the config directory).
    pub cwd: &'a Path,
    /// Its complete environment (see `helper_env`).
    pub env: &'a [(String, String)],
    /// Where the JSON output holds a lease length in seconds (`ttl_pointer`).
    pub ttl_pointer: Option<&'a str>,
    /// Who it runs as (`user`/`group`); agentsup's own uid if `None`.
    pub creds: Option<&'a crate::sys::creds::Creds>,
}

/// The environment of a command source: agentsup's variables that match the
/// `[env] inherit` globs or the source's own `env` globs, nothing else. Run as
/// another user, its HOME, USER and LOGNAME are that account's, as for a worker.
pub(crate) fn helper_env(
    process_env: &super::ProcessEnv,
    inherit: &globset::GlobSet,
    listed: &globset::GlobSet,
    creds: Option<&crate::sys::creds::Creds>,
) -> Vec<(String, String)> {
    let account = creds.and_then(|c| c.account.as_ref());
    process_env
        .vars
        .iter()
        .filter(|(k, _)| inherit.is_match(k.as_str()) || listed.is_match(k.as_str()))
        .map(|(k, v)| {
            let own = account.and_then(|a| a.variable(k));
            (k.clone(), own.unwrap_or(v.expose()).to_string())
        })
        .collect()
}

/// Values a command produced: `(name, value, quote, notes)`.
#[derive(Debug, Default)]
pub struct CommandLoad {
    /// The values.
    pub entries: Vec<(String, Sensitive, Option<Quote>, Vec<RecordNote>)>,
    /// Skipped values and parse problems.
    pub problems: Vec<SourceProblem>,
    /// The lease under `ttl_pointer`, when the source has one and it was found.
    pub lease: Option<Duration>,
}

/// Runs the command and parses what it printed.
pub fn load(
    spec: &CommandSpec<'_>,
    ctx: &LoadContext<'_>,
    known: &[(String, Sensitive)],
) -> Result<CommandLoad, SourceProblem> {
    let program = spec.argv[0].clone();
    let location = format!("command `{program}`");
    let fail = |message: String| SourceProblem {
        severity: Severity::Error,
        location: location.clone(),
        key: None,
        message,
    };
    let out = ctx
        .runner
        .run(spec.argv, spec.env, spec.cwd, spec.timeout, spec.creds)
        .map_err(|e| {
            fail(format!(
                "{e}; check the command by hand, and raise `timeout` if it is only slow"
            ))
        })?;
    // Everything it printed is a secret: registered before any message about the
    // command exists, whatever its exit status.
    let printed = printed_values(&out.stdout, &program);
    ctx.redactor.extend(printed.iter().cloned());
    // A failing secret tool may also echo what it was given: agentsup's own
    // credentials for it (VAULT_TOKEN, OP_SERVICE_ACCOUNT_TOKEN, AWS_*) and values
    // read so far.
    let mut secrets: Vec<(String, Sensitive)> = known.to_vec();
    secrets.extend(
        ctx.process_env
            .vars
            .iter()
            .filter(|(k, _)| looks_like_credential(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    secrets.extend(printed);
    let redactor = Redactor::new(secrets);
    let stderr_tail = || {
        let text = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(10);
        let tail = lines[start..].join("\n    ");
        if tail.is_empty() {
            " (stderr was empty)".to_string()
        } else {
            format!(
                "; its stderr ended with:\n    {}",
                ctx.redactor.redact_str(&redactor.redact_str(&tail))
            )
        }
    };
    if let Some(sig) = out.signal {
        return Err(fail(format!("was killed by signal {sig}{}", stderr_tail())));
    }
    if out.code != Some(0) {
        return Err(fail(format!(
            "exited with status {}{}",
            out.code.unwrap_or(-1),
            stderr_tail()
        )));
    }
    let mut load = match spec.format {
        CommandFormat::Dotenv => parse_dotenv_output(&out.stdout, &location),
        CommandFormat::Json => parse_json_output(&out.stdout, spec.json_pointer, &location)?,
    };
    if let Some(pointer) = spec.ttl_pointer {
        match lease_at(&out.stdout, pointer) {
            Ok(lease) => load.lease = Some(lease),
            Err(why) => load.problems.push(SourceProblem {
                severity: Severity::Warning,
                location: location.clone(),
                key: None,
                message: format!(
                    "ttl_pointer {pointer:?} {why}; the source is refreshed by `refresh` only (if set)"
                ),
            }),
        }
    }
    Ok(load)
}

/// The lease length at `pointer` in a JSON output: a number of seconds, or a
/// string of digits. The error names the JSON type, never a value.
fn lease_at(stdout: &[u8], pointer: &str) -> Result<Duration, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|_| "needs JSON output".to_string())?;
    let v = doc.pointer(pointer).ok_or_else(|| {
        format!(
            "matches nothing in the output; top-level fields are: {}",
            field_names(&doc)
        )
    })?;
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
    .ok_or_else(|| format!("is {}, not a number of seconds", kind_of(v)))?;
    // Capped like every duration in the config (a year).
    Ok(Duration::from_secs_f64(secs.min(366.0 * 24.0 * 3600.0)))
}

/// Names of agentsup's own variables that a secret tool may be handed and echo.
fn looks_like_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    crate::secret::name_looks_secret(name)
        || [
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSPHRASE",
            "CREDENTIAL",
            "AUTH",
            "_KEY",
        ]
        .iter()
        .any(|w| upper.contains(w))
}

/// Every value in a command's stdout, named for `[redacted:NAME]`: each dotenv
/// record, and each string and number of a JSON document (named by the nearest
/// object key, else the program). Short ones are dropped by the redactor itself.
fn printed_values(stdout: &[u8], program: &str) -> Vec<(String, Sensitive)> {
    let mut out: Vec<(String, Sensitive)> = dotenv::parse(stdout)
        .records
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect();
    let fallback = Path::new(program)
        .file_name()
        .map_or_else(|| program.to_string(), |n| n.to_string_lossy().into_owned());
    match serde_json::from_slice::<serde_json::Value>(stdout) {
        Ok(doc) => json_leaves(&doc, &fallback, &mut out),
        // A document cut short (a helper that failed halfway) or otherwise
        // broken: whatever it holds may still be a secret the helper then echoes
        // on stderr. (Only what starts as JSON: in dotenv or plain text the words
        // outside quotes are names as often as values.)
        Err(_) if looks_like_json(stdout) => out.extend(loose_values(stdout, &fallback)),
        Err(_) => {}
    }
    out
}

/// Whether output starts as a JSON object or array would.
fn looks_like_json(stdout: &[u8]) -> bool {
    matches!(
        stdout.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// The values in JSON output that is not a valid document: every string literal
/// (unescaped, named by the object key before it, if any; object keys themselves
/// are names, not values), and, outside the literals, every run of characters
/// between blanks, quotes and punctuation. A superset of what the helper meant
/// to print, which is what redacting its stderr needs; short runs are dropped by
/// the redactor itself.
fn loose_values(stdout: &[u8], program: &str) -> Vec<(String, Sensitive)> {
    static LITERAL: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let literal = LITERAL.get_or_init(|| {
        regex::Regex::new(r#""((?:[^"\\]|\\.)*)"(\s*:)?"#).expect("a valid pattern")
    });
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(stdout).into_owned());
    let mut out = Vec::new();
    let mut name = program.to_string();
    for m in literal.captures_iter(&text) {
        let inner = m.get(1).map_or("", |g| g.as_str());
        let value = serde_json::from_str::<String>(&format!("\"{inner}\""))
            .unwrap_or_else(|_| inner.to_string());
        if m.get(2).is_some() {
            name = value;
        } else {
            out.push((name.clone(), Sensitive::new(value)));
        }
    }
    // Outside the literals (keys would be names, not values).
    let rest = zeroize::Zeroizing::new(literal.replace_all(&text, " ").into_owned());
    let pieces = rest
        .split(|c: char| c.is_whitespace() || "\"',:;{}[]=()".contains(c))
        .filter(|p| !p.is_empty());
    out.extend(pieces.map(|p| (program.to_string(), Sensitive::new(p.to_string()))));
    out
}

fn json_leaves(v: &serde_json::Value, name: &str, out: &mut Vec<(String, Sensitive)>) {
    match v {
        serde_json::Value::String(s) => out.push((name.to_string(), Sensitive::new(s.clone()))),
        serde_json::Value::Number(n) => out.push((name.to_string(), Sensitive::new(n.to_string()))),
        serde_json::Value::Array(items) => {
            for item in items {
                json_leaves(item, name, out);
            }
        }
        serde_json::Value::Object(fields) => {
            for (k, item) in fields {
                json_leaves(item, k, out);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) => {}
    }
}

fn parse_dotenv_output(stdout: &[u8], location: &str) -> CommandLoad {
    let parsed = dotenv::parse(stdout);
    let mut load = CommandLoad::default();
    for e in &parsed.errors {
        load.problems.push(SourceProblem {
            severity: Severity::Error,
            location: format!("{location} output line {}", e.line),
            key: e.key.clone(),
            message: e.reason.clone(),
        });
    }
    for r in parsed.effective() {
        load.entries.push((
            r.key.clone(),
            r.value.clone(),
            Some(r.quote),
            r.notes.clone(),
        ));
    }
    load
}

fn parse_json_output(
    stdout: &[u8],
    pointer: Option<&str>,
    location: &str,
) -> Result<CommandLoad, SourceProblem> {
    let fail = |message: String| SourceProblem {
        severity: Severity::Error,
        location: location.to_string(),
        key: None,
        message,
    };
    // serde_json's error names line and column only, never the text around it.
    let doc: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
        fail(format!(
            "stdout is not valid JSON (line {}, column {}); check `format`",
            e.line(),
            e.column()
        ))
    })?;
    let target = match pointer {
        Some(p) => doc.pointer(p).ok_or_else(|| {
            fail(format!(
                "json_pointer {p:?} matches nothing in the output; top-level fields are: {}",
                field_names(&doc)
            ))
        })?,
        None => &doc,
    };
    let Some(obj) = target.as_object() else {
        return Err(fail(format!(
            "expected a JSON object of strings at {:?}, found {}",
            pointer.unwrap_or(""),
            kind_of(target)
        )));
    };
    let mut load = CommandLoad::default();
    for (k, v) in obj {
        if !is_var_name(k) {
            load.problems.push(SourceProblem {
                severity: Severity::Warning,
                location: location.to_string(),
                key: None,
                message: format!("field {k:?} is not a variable name; skipped"),
            });
            continue;
        }
        let value = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                load.problems.push(SourceProblem {
                    severity: Severity::Warning,
                    location: location.to_string(),
                    key: Some(k.clone()),
                    message: format!("{k} is {}, not a string; skipped", kind_of(other)),
                });
                continue;
            }
        };
        load.entries
            .push((k.clone(), Sensitive::new(value), None, Vec::new()));
    }
    Ok(load)
}

fn field_names(v: &serde_json::Value) -> String {
    match v.as_object() {
        Some(o) if !o.is_empty() => o
            .keys()
            .map(|k| format!("/{k}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "(none)".to_string(),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointer_and_types() {
        let out = br#"{"data":{"data":{"OPENAI_API_KEY":"sk-x","N":3,"bad-name":"v","O":{}}}}"#;
        let l = parse_json_output(out, Some("/data/data"), "command `vault`").unwrap();
        let names: Vec<&str> = l.entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, vec!["N", "OPENAI_API_KEY"]);
        assert_eq!(l.problems.len(), 2);
        let e = parse_json_output(out, Some("/nope"), "c").unwrap_err();
        assert!(e.message.contains("/data"), "{}", e.message);
    }

    #[test]
    fn every_printed_string_and_number_is_a_value_to_redact() {
        let out = br#"{"request_id":"9b1d-77aa","data":{"OPENAI_API_KEY":"sk-proj-abc123456","N":3,"ttl":2764800,"ok":true,"list":["first-item-x"]}}"#;
        let mut got: Vec<(String, String)> = printed_values(out, "/usr/bin/vault")
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_string()))
            .collect();
        got.sort();
        let want = [
            ("N", "3"),
            ("OPENAI_API_KEY", "sk-proj-abc123456"),
            ("list", "first-item-x"),
            ("request_id", "9b1d-77aa"),
            ("ttl", "2764800"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
        // dotenv output, and a bare JSON string named after the program.
        let got = printed_values(b"A=one-value\n", "vault");
        assert_eq!(got[0].0, "A");
        let got = printed_values(br#""just-a-token""#, "/opt/bin/op");
        assert_eq!(got[0].0, "op");
    }

    #[test]
    fn a_helper_gets_the_inherit_set_and_its_own_list_only() {
        let penv = super::super::ProcessEnv::from_pairs([
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("VAULT_ADDR", "http://v"),
            ("VAULT_TOKEN", "hvs.x"),
            ("OPENAI_API_KEY", "sk-other-worker"),
        ]);
        let set = |globs: &[&str]| {
            let mut b = globset::GlobSetBuilder::new();
            for g in globs {
                b.add(globset::Glob::new(g).unwrap());
            }
            b.build().unwrap()
        };
        let env = helper_env(&penv, &set(&["PATH", "HOME"]), &set(&["VAULT_*"]), None);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["HOME", "PATH", "VAULT_ADDR", "VAULT_TOKEN"]);
        let creds = crate::sys::creds::Creds {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
            account: Some(crate::sys::creds::Account {
                name: "nobody".into(),
                home: "/nonexistent".into(),
            }),
        };
        let env = helper_env(&penv, &set(&["PATH", "HOME"]), &set(&[]), Some(&creds));
        assert!(
            env.contains(&("HOME".into(), "/nonexistent".into())),
            "{env:?}"
        );
    }

    #[test]
    fn a_lease_is_read_in_seconds_and_a_bad_one_is_named_by_type() {
        let out = br#"{"lease_duration": 2764800, "data": {"K": "v"}, "s": "90", "o": {}}"#;
        assert_eq!(
            lease_at(out, "/lease_duration"),
            Ok(Duration::from_secs(2_764_800))
        );
        assert_eq!(lease_at(out, "/s"), Ok(Duration::from_secs(90)));
        let e = lease_at(out, "/o").unwrap_err();
        assert!(e.contains("an object"), "{e}");
        let e = lease_at(out, "/ttl").unwrap_err();
        assert!(e.contains("/lease_duration"), "{e}");
    }

    #[test]
    fn output_cut_short_still_yields_every_value_it_held() {
        let out = br#"{"data":{"OPENAI_API_KEY":"sk-proj-cut\"short-0001", "X": "#;
        let got: Vec<(String, String)> = printed_values(out, "/usr/bin/vault")
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_string()))
            .collect();
        assert!(
            got.contains(&("OPENAI_API_KEY".into(), "sk-proj-cut\"short-0001".into())),
            "{got:?}"
        );
        // Object keys are names, not values.
        assert!(
            !got.iter()
                .any(|(_, v)| v == "data" || v == "OPENAI_API_KEY"),
            "{got:?}"
        );
        // Bare words of broken JSON are values; in dotenv output, names are not.
        let got: Vec<String> = printed_values(b"{\"K\": hvs.CAESIabcdef0123456789, ", "vault")
            .into_iter()
            .map(|(_, v)| v.expose().to_string())
            .collect();
        assert!(
            got.contains(&"hvs.CAESIabcdef0123456789".to_string()),
            "{got:?}"
        );
        let got: Vec<String> = printed_values(b"MY_TOKEN=first-value-0001\n", "vault")
            .into_iter()
            .map(|(_, v)| v.expose().to_string())
            .collect();
        assert_eq!(got, ["first-value-0001"]);
    }

    #[test]
    fn invalid_json_never_echoes_text() {
        let e = parse_json_output(b"{\"K\": sk-secret-value}", None, "c").unwrap_err();
        assert!(!e.message.contains("sk-secret"));
    }
}
