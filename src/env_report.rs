//! Rendering of `agentsup env WORKER`: text, JSON and dotenv, secrets masked unless
//! `--reveal` (SPEC 3). This is the only place in agentsup that may print a value.

use std::fmt::Write as _;

use crate::env::BuiltEnv;
use crate::plan::Plan;
use crate::redact::mask_url_password;
use crate::secret::mask;

/// How `agentsup env` prints an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned table.
    #[default]
    Text,
    /// `{"NAME": {"value", "source", "secret"}}`.
    Json,
    /// `NAME=value` lines.
    Dotenv,
}

/// Renders a built environment.
pub fn render(env: &BuiltEnv, format: Format, reveal: bool, plan: &Plan) -> String {
    let shown = |secret: bool, value: &str| -> String {
        if secret && !reveal {
            mask(value)
        } else {
            value.to_string()
        }
    };
    // A connection URL's password is masked whatever the variable's name; the
    // scheme, user and host stay visible (issue 12).
    let url_masked = |secret: bool, value: &str| -> Option<String> {
        (!secret && !reveal)
            .then(|| mask_url_password(value))
            .flatten()
    };
    match format {
        Format::Json => {
            let mut map = serde_json::Map::new();
            for (k, v) in &env.vars {
                let value = url_masked(v.secret, v.value.expose())
                    .unwrap_or_else(|| shown(v.secret, v.value.expose()));
                map.insert(
                    k.clone(),
                    serde_json::json!({
                        "value": value,
                        "source": v.provenance.to_string(),
                        "secret": v.secret,
                    }),
                );
            }
            let mut s = serde_json::to_string_pretty(&serde_json::Value::Object(map))
                .unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        }
        Format::Dotenv => {
            let mut s = String::new();
            for (k, v) in &env.vars {
                let _ = writeln!(s, "# {}", v.provenance);
                if v.secret && !reveal {
                    let _ = writeln!(
                        s,
                        "# {k}=<secret, {}; add --reveal to print it>",
                        mask(v.value.expose())
                    );
                } else if let Some(masked) = url_masked(v.secret, v.value.expose()) {
                    let _ = writeln!(
                        s,
                        "# {k}={masked} (the password is masked; add --reveal to print it)"
                    );
                } else {
                    let _ = writeln!(s, "{k}={}", dotenv_quote(v.value.expose()));
                }
            }
            s
        }
        Format::Text => {
            let name_w = env.vars.keys().map(|k| k.len()).max().unwrap_or(4).max(4);
            let rows: Vec<(String, String, String)> = env
                .vars
                .iter()
                .map(|(k, v)| {
                    let value = shown(v.secret, v.value.expose());
                    let value = if v.secret && !reveal {
                        value
                    } else if let Some(masked) = url_masked(v.secret, v.value.expose()) {
                        format!("{masked:?}")
                    } else {
                        format!("{value:?}")
                    };
                    (k.clone(), value, v.provenance.to_string())
                })
                .collect();
            let val_w = rows
                .iter()
                .map(|r| r.1.chars().count())
                .max()
                .unwrap_or(5)
                .max(5);
            let mut s = String::new();
            let _ = writeln!(s, "{:name_w$}  {:val_w$}  SOURCE", "NAME", "VALUE");
            for (k, v, src) in rows {
                let pad = val_w.saturating_sub(v.chars().count());
                let _ = writeln!(s, "{k:name_w$}  {v}{}  {src}", " ".repeat(pad));
            }
            if env.vars.contains_key("PYTHON_DOTENV_DISABLED") {
                let _ = writeln!(
                    s,
                    "\nnote: PYTHON_DOTENV_DISABLED=1 stops python-dotenv's load_dotenv() from pulling a stale .env past agentsup; set [env] worker_dotenv = true in {} to allow it",
                    plan.config_path.display()
                );
            }
            if !reveal
                && env
                    .vars
                    .values()
                    .any(|v| v.secret || mask_url_password(v.value.expose()).is_some())
            {
                let _ = writeln!(s, "note: secret values are masked; --reveal prints them");
            }
            s
        }
    }
}

/// Quotes a value so python-dotenv, Node's dotenv and agentsup all read it back.
fn dotenv_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,".contains(c))
    {
        return v.to_string();
    }
    if !v.contains('\'') && !v.contains('\n') {
        return format!("'{v}'");
    }
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '$' => s.push_str("\\$"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
