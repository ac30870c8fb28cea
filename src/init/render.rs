//! The draft as a commented `supervisor.toml`. Values of secrets never appear:
//! only key names, which the sources resolve at run time.

use std::fmt::Write;

use super::command::Shell;
use super::{Draft, DraftWorker, shared_keys};

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    let one_line = format!("[{}]", inner.join(", "));
    // A long list (many keys, a long argv) one item a line, so that the file
    // reads at 80 columns.
    if one_line.len() <= 64 {
        return one_line;
    }
    let mut out = String::from("[\n");
    for item in inner {
        out.push_str("    ");
        out.push_str(&item);
        out.push_str(",\n");
    }
    out.push(']');
    out
}

impl Draft {
    /// The config text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# supervisor.toml drafted by `agentsup init`.");
        if !self.read.is_empty() {
            let _ = writeln!(out, "# Read: {}.", self.read.join(", "));
        }
        let _ = writeln!(
            out,
            "# Check it with `agentsup check`, see one worker's environment with\n\
             # `agentsup env WORKER`, then `agentsup run`. Every field: docs/config.md.\n"
        );
        let _ = writeln!(out, "[supervisor]");
        match &self.shutdown_timeout {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "shutdown_timeout = {}   # holds the longest stop_timeout below, plus a margin",
                    q(t)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "shutdown_timeout = \"10s\"   # grace between the stop signal and SIGKILL"
                );
            }
        }
        let _ = writeln!(
            out,
            "# health = \"127.0.0.1:9464\"   # /healthz /readyz /metrics for probes\n"
        );

        let _ = writeln!(
            out,
            "# Sources, in order: a later one overrides an earlier one."
        );
        if let Some(keys) = &self.dotenv_keys {
            let _ = writeln!(
                out,
                "[[source]]\ntype = \"dotenv\"\npath = \".env\"             # {} key(s); values stay in the file\n",
                keys.len()
            );
        }
        if let Some((dir, keys)) = &self.secrets {
            let _ = writeln!(
                out,
                "[[source]]\ntype = \"dir\"               # one file per key (Docker/Kubernetes secrets)\npath = {}\noptional = true            # {} key(s) here now\n",
                q(&dir.display().to_string()),
                keys.len()
            );
        }
        let _ = writeln!(
            out,
            "[[source]]\ntype = \"env\"               # agentsup's own environment (docker -e, k8s env) wins last\n"
        );
        for key in &self.secret_keys {
            let _ = writeln!(
                out,
                "[keys.{key}]\nsecret = true              # usually a URL with a password in it: redact it\n"
            );
        }
        let shared = shared_keys(self);
        for w in &self.workers {
            render_worker(&mut out, w, &shared);
        }
        out
    }
}

fn render_worker(out: &mut String, w: &DraftWorker, shared: &[String]) {
    let _ = writeln!(out, "# from {}", w.origin);
    for note in &w.notes {
        // Wrapped, so the file reads at 80 columns like everything else.
        let opts = textwrap::Options::new(78)
            .subsequent_indent("      ")
            .break_words(false);
        for line in textwrap::wrap(&format!("note: {note}"), opts) {
            let _ = writeln!(out, "# {line}");
        }
    }
    let _ = writeln!(out, "[[worker]]\nname = {}", q(&w.name));
    let _ = writeln!(out, "command = {}", list(&w.command.argv));
    match w.command.shell {
        Shell::No => {}
        Shell::Exec => {
            let _ = writeln!(
                out,
                "# (a shell line: `exec` hands signals and the exit status to the program itself)"
            );
        }
        Shell::Stays => {
            let _ = writeln!(
                out,
                "# (a shell line run as written, without `exec`: sh stays the main process,\n\
                 #  stop_signal reaches every process of its group, and the exit status is\n\
                 #  the last command's)"
            );
        }
    }
    if let Some(cwd) = &w.cwd {
        let _ = writeln!(out, "cwd = {}", q(cwd));
    }
    if w.replicas > 1 {
        let _ = writeln!(out, "replicas = {}", w.replicas);
    }
    let mut keys: Vec<String> = shared.to_vec();
    for k in &w.keys {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    // The note on its own line: after a long list it ran past 100 columns.
    let _ = writeln!(
        out,
        "# keys: exact names are required; a glob (X*) is optional\nkeys = {}",
        list(&keys)
    );
    if !w.vars.is_empty() {
        let pairs: Vec<String> = w
            .vars
            .iter()
            .map(|(k, v)| format!("{k} = {}", q(v)))
            .collect();
        let _ = writeln!(out, "vars = {{ {} }}", pairs.join(", "));
    }
    if let Some(r) = w.restart {
        let _ = writeln!(out, "restart = {}", q(r));
    }
    if let Some(s) = &w.stop_signal {
        let _ = writeln!(out, "stop_signal = {}", q(s));
    }
    if let Some(t) = &w.stop_timeout {
        let _ = writeln!(out, "stop_timeout = {}", q(t));
    }
    if let Some(u) = &w.user {
        let _ = writeln!(out, "user = {}", q(u));
    }
    out.push('\n');
}

#[cfg(test)]
mod list_tests {
    use super::list;

    #[test]
    fn a_long_list_is_one_item_a_line() {
        let short = list(&["python3".into(), "worker.py".into()]);
        assert_eq!(short, r#"["python3", "worker.py"]"#);
        let keys: Vec<String> = (0..8).map(|i| format!("PROVIDER_{i}_API_KEY")).collect();
        let long = list(&keys);
        assert!(
            long.starts_with("[\n    \"PROVIDER_0_API_KEY\",\n"),
            "{long}"
        );
        assert!(long.lines().all(|l| l.len() <= 80), "{long}");
        let parsed: toml::Value = toml::from_str(&format!("keys = {long}")).unwrap();
        assert_eq!(parsed["keys"].as_array().unwrap().len(), 8);
    }
}
