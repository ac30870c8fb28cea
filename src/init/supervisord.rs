//! supervisord `[program:x]` sections.
//!
//! Read by hand rather than with an INI crate: supervisord's files are Python
//! `configparser` dialect (indented continuation lines, `key: value` as well as
//! `key=value`, inline comments only after whitespace-then-`;`), and the INI crates
//! disagree with it on exactly those points.

use std::path::Path;

use super::command::from_shell_line;
use super::{DraftWorker, relative_to};

/// Files in `dir` that hold at least one `[program:…]` section.
pub(super) fn candidates(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf") || n.ends_with(".ini"))
        .collect();
    names.sort();
    for name in names {
        if let Ok(text) = std::fs::read_to_string(dir.join(&name))
            && text.contains("[program:")
        {
            out.push(name);
        }
    }
    out
}

/// Sections in file order: (name, keys in order, 1-based line of the header).
type Section = (String, Vec<(String, String)>, usize);

fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            out.push((
                trimmed[1..trimmed.len() - 1].trim().to_string(),
                Vec::new(),
                i + 1,
            ));
            continue;
        }
        let Some((_, keys, _)) = out.last_mut() else {
            continue;
        };
        let line = strip_inline_comment(raw);
        if raw.starts_with([' ', '\t']) {
            // A continuation of the previous value.
            if let Some((_, value)) = keys.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        let split = line.find(['=', ':']);
        if let Some(at) = split {
            let key = line[..at].trim().to_ascii_lowercase();
            let value = line[at + 1..].trim().to_string();
            keys.push((key, value));
        }
    }
    out
}

fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b';' && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

/// `environment=A="1",B="two words"` → pairs (supervisord's own quoting).
fn environment(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = &rest[eq + 1..];
        let (val, after) = if let Some(q) = rest.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else if let Some(q) = rest.strip_prefix('\'') {
            match q.find('\'') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match rest.find(',') {
                Some(end) => (rest[..end].trim().to_string(), &rest[end..]),
                None => (rest.trim().to_string(), ""),
            }
        };
        if !key.is_empty() {
            out.push((key, val));
        }
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The workers of every `[program:x]` in `text`.
pub(super) fn parse(text: &str, file: &str, dir: &Path) -> Result<Vec<DraftWorker>, String> {
    let mut out = Vec::new();
    for (section, keys, line) in sections(text) {
        let Some(name) = section.strip_prefix("program:") else {
            continue;
        };
        let get = |k: &str| {
            keys.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let Some(command) = get("command") else {
            return Err(format!(
                "line {line}: [program:{name}] has no `command=`; add it or remove the section"
            ));
        };
        let here = dir.display().to_string();
        let command = command
            .replace("%(program_name)s", name)
            .replace("%(here)s", &here);
        let mut worker =
            DraftWorker::new(name, from_shell_line(&command), format!("{file}:{line}"));
        if command.contains("%(") {
            worker.notes.push(
                "the command uses a supervisord %(…)s expansion agentsup does not have: \
                 replace it (AGENTSUP_REPLICA is the 0-based process number)"
                    .into(),
            );
        }
        if let Some(d) = get("directory") {
            worker.cwd = Some(relative_to(dir, &d.replace("%(here)s", &here)));
        }
        if let Some(n) = get("numprocs").and_then(|n| n.parse::<u32>().ok()) {
            worker.replicas = n.max(1);
        }
        worker.restart = match get("autorestart").map(str::to_ascii_lowercase).as_deref() {
            Some("true") => Some("always"),
            Some("false") => Some("never"),
            _ => None, // "unexpected", supervisord's default, is on-failure
        };
        if let Some(sig) = get("stopsignal") {
            let sig = sig.to_ascii_uppercase();
            let sig = if sig.starts_with("SIG") {
                sig
            } else {
                format!("SIG{sig}")
            };
            if sig != "SIGTERM" {
                worker.stop_signal = Some(sig);
            }
        }
        if let Some(secs) = get("stopwaitsecs").and_then(|s| s.parse::<u64>().ok())
            && secs != 10
        {
            worker.stop_timeout = Some(format!("{secs}s"));
        }
        if let Some(user) = get("user") {
            worker.user = Some(user.to_string());
        }
        if get("autostart").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            worker.notes.push(
                "autostart=false in supervisord: agentsup starts every worker; leave this one \
                 out with `agentsup run --only …` or remove it"
                    .into(),
            );
        }
        for (k, v) in get("environment").map(environment).unwrap_or_default() {
            if super::must_not_be_copied(&k, &v) {
                // Never copy a secret into the config: declare it and let a source hold it.
                worker.keys.push(k.clone());
                worker.notes.push(format!(
                    "{k} was a literal in supervisord's environment=: move its value into .env \
                     (or a secret directory); it is declared here, not copied"
                ));
            } else {
                worker.vars.push((k, v));
            }
        }
        out.push(worker);
    }
    Ok(out)
}
